"""The router twin: the NAT gateway between the outside network and the lab LAN.

What it holds is what the 0x904 causes between the machines need: its addresses, the port
forwards (DNAT) it holds, the MTU of the link toward a remote (VPN) client, whether ICMP
fragmentation-needed passes, whether it clamps the TCP MSS of forwarded connections, and
the DHCP reservations it hands out. ``gather`` gives its facts, ``apply`` runs router ops
(``rdplab.router_ops``), ``snapshot`` is what the no-collateral diff compares.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from rdplab.errors import OpError
from rdplab.ops import BatchResult, Op, OpResult
from rdplab.router_ops import validate_router_op

#: Ethernet's MTU: a link that carries it unchanged (RFC 894).
ETHERNET_MTU = 1500


@dataclass
class Forward:
    port: int
    to: str
    to_port: int

    def to_json(self) -> dict[str, Any]:
        return {"port": self.port, "to": self.to, "to_port": self.to_port}


@dataclass
class RouterTwin:
    name: str = "ROUTER"
    lan_address: str = "192.168.56.1"
    outside_address: str = "203.0.113.1"
    forwards: dict[int, Forward] = field(default_factory=dict)
    link_mtu: int = ETHERNET_MTU
    icmp_frag_needed: bool = True
    mss_clamp: bool = False
    reservations: dict[str, str] = field(default_factory=dict)

    # -- facts ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "addresses": {"lan": self.lan_address, "outside": self.outside_address},
            "forwards": {str(p): f.to_json() for p, f in sorted(self.forwards.items())},
            "link_mtu": self.link_mtu,
            "icmp_frag_needed": "pass" if self.icmp_frag_needed else "drop",
            "mss_clamp": self.mss_clamp,
            "dhcp_reservations": dict(sorted(self.reservations.items())),
        }

    def gather(self, request: dict[str, Any] | None = None) -> dict[str, Any]:
        return copy.deepcopy(self.snapshot())

    def forward(self, port: int) -> Forward | None:
        return self.forwards.get(port)

    # -- ops ------------------------------------------------------------------------------
    def apply(self, ops: list[Op]) -> BatchResult:
        """One batch: each op in order; the first failing op rolls the batch back."""
        saved = copy.deepcopy(self.__dict__)
        results: list[OpResult] = []
        for o in ops:
            try:
                validate_router_op(o)
                results.append(self._apply(o))
            except OpError as exc:
                self.__dict__.update(saved)
                results.append(OpResult(o.name, False, "rolled back", error=exc.message))
                break
        return BatchResult(results)

    def _apply(self, o: Op) -> OpResult:
        a = o.args
        if o.name == "fwd.set":
            want = Forward(int(a["port"]), str(a["to"]), int(a["to_port"]))
            if self.forwards.get(want.port) == want:
                return OpResult(o.name, False, f"TCP {want.port} already -> {want.to}")
            self.forwards[want.port] = want
            return OpResult(o.name, True, f"TCP {want.port} -> {want.to}:{want.to_port}")
        if o.name == "fwd.remove":
            gone = self.forwards.pop(int(a["port"]), None)
            return OpResult(o.name, gone is not None, f"forward of TCP {a['port']} removed")
        if o.name == "dhcp.reserve":
            if self.reservations.get(str(a["name"]).lower()) == a["address"]:
                return OpResult(o.name, False, f"{a['name']} already reserved")
            self.reservations[str(a["name"]).lower()] = str(a["address"])
            return OpResult(o.name, True, f"{a['address']} reserved for {a['name']}")
        if o.name == "mss.clamp":
            changed, self.mss_clamp = not self.mss_clamp, True
            return OpResult(o.name, changed, "MSS of forwarded SYNs clamped to the route MTU")
        if o.name == "icmp.frag":
            allow = bool(a["allow"])
            changed, self.icmp_frag_needed = self.icmp_frag_needed != allow, allow
            return OpResult(
                o.name, changed, f"ICMP fragmentation-needed {'passes' if allow else 'dropped'}"
            )
        if o.name == "link.mtu":
            mtu = int(a["mtu"])
            if not 576 <= mtu <= ETHERNET_MTU:
                raise OpError(f"link.mtu: {mtu} is outside 576..{ETHERNET_MTU}")
            changed, self.link_mtu = self.link_mtu != mtu, mtu
            return OpResult(o.name, changed, f"link MTU {mtu}")
        raise OpError(f"router op {o.name} is not implemented by the twin")
