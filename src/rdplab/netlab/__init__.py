"""Real packets for the lab: Linux network namespaces for a client, a router and a host.

``build(plan)`` makes three namespaces joined by veth pairs (topology.py), loads the
router's and host's nftables rules (nft.py), starts the lab DNS in the router (dns.py) and
returns a ``NetLab``: run Python inside a namespace (``call``, ``start_thread``: a setns
worker thread, run.py), programs (``exec``), capture what crosses the router as a ladder
(``capture``, capture.py), and tear it all down (``close``; also at exit, and
``cleanup_stale`` removes what a dead run left).

    require()                                   # NetlabUnavailable: one line, the fix
    plan = NetPlan(run_id="ab1", client_site="outside",
                   forwards=(Forward(3389, "192.168.56.11", 3389),))
    with build(plan) as lab:
        server = lab.serve_rdp()                # RDPServer in the host namespace
        result = lab.probe(lab.dial_address, 3389, timeout=3)   # probe() in the client's

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN), ``ip`` and ``nft``; ``capture`` also needs
``tcpdump``. Nothing is created in or routed through the root namespace.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

from rdplab.netlab import dns, nft, topology
from rdplab.netlab.capture import (
    Capture,
    LadderEvent,
    View,
    chain_identity,
    render,
    server_flight_size,
)
from rdplab.netlab.run import (
    NetlabError,
    NetlabUnavailable,
    call_in,
    cleanup_stale,
    ns_argv,
    register,
    require,
    sh,
    thread_in,
    unregister,
)
from rdplab.netlab.topology import Forward, Links, NetPlan

T = TypeVar("T")
RDP_PORT = 3389


class NetLab:
    """A built lab. A context manager; ``close()`` is idempotent."""

    def __init__(self, plan: NetPlan) -> None:
        self.plan = plan
        self.names: dict[str, str] = topology.names_for(plan.run_id)
        ad = topology.addressing(plan)
        self.dns_server: str = ad.dns_address
        #: what the client dials to reach the host's RDP port (the host itself on the LAN
        #: and over the VPN, the router's outside address from outside)
        self.dial_address: str = ad.dial_address
        self.client_address: str = ad.client_address
        self.links: Links | None = None
        self.dns: dns.LabDNS | None = None
        self._servers: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._captures: list[Capture] = []
        self._closed = False
        self._lock = threading.Lock()

    # -- building --------------------------------------------------------------------------
    def _build(self) -> NetLab:
        register(id(self), self.close)
        try:
            self.links = topology.build(self.plan, self.names)
            nft.apply(self.names["router"], nft.router_ruleset(self.plan, self.links))
            host_rules = nft.host_ruleset(self.plan)
            if host_rules is not None:
                nft.apply(self.names["host"], host_rules)
            zone, address = dict(self.plan.dns_zone), self.dns_server
            self.dns = self.call("router", lambda: dns.LabDNS(zone, address).start())
        except BaseException:
            self.close()
            raise
        return self

    # -- running things inside -------------------------------------------------------------
    def ns(self, role: str) -> str:
        if role not in self.names:
            raise ValueError(f"role must be one of {sorted(self.names)}, not {role!r}")
        return self.names[role]

    def call(self, role: str, func: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``func`` inside ``role``'s namespace (a setns worker thread); return its
        result or re-raise its exception."""
        return call_in(self.ns(role), func, timeout)

    def start_thread(self, role: str, target: Callable[[], None]) -> threading.Thread:
        """A daemon thread running ``target`` inside the namespace (a long-running
        server); joined (bounded) by ``close``."""
        thread = thread_in(self.ns(role), target, name=f"netlab-{self.plan.run_id}-{role}")
        self._threads.append(thread)
        return thread

    def exec(
        self, role: str, argv: list[str], timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a program inside the namespace (``ip netns exec``); not checked."""
        return sh(ns_argv(self.ns(role), argv), check=False, timeout=timeout)

    def shell_argv(self, role: str) -> list[str]:
        """argv of an interactive shell inside the namespace."""
        shell = os.environ.get("SHELL") or "/bin/sh"
        return ns_argv(self.ns(role), [shell])

    # -- the lab's parts -------------------------------------------------------------------
    def serve_rdp(self, behaviour: Any = None, port: int = RDP_PORT, on_event: Any = None) -> Any:
        """Start ``rdplab.serve.RDPServer`` on the host's address inside the host namespace
        (its socket and threads are made there) and stop it at ``close``. Call
        ``server.play`` through ``lab.call("host", ...)``: a listener change rebinds."""
        from rdplab.serve import RDPServer

        address = self.plan.host_address
        server = self.call(
            "host", lambda: RDPServer(address, port, behaviour, on_event=on_event).start()
        )
        self._servers.append(server)
        return server

    def probe(self, address: str | None = None, port: int = RDP_PORT, **kw: Any) -> Any:
        """``rdplab.probe.probe`` run inside the client namespace (default: the address the
        client dials for the host). Returns its ConnectionResult."""
        from rdplab.probe import probe

        target = address or self.dial_address
        timeout = float(kw.get("timeout", 5.0))
        kw.setdefault("resolution", f"{target} (given, no lookup)")
        return self.call("client", lambda: probe(target, port, **kw), timeout=4 * timeout + 10)

    def capture(self) -> Capture:
        """Start capturing on the router's two lab-facing interfaces."""
        if self.links is None:
            raise NetlabError("the lab is not built")
        plan, links = self.plan, self.links
        lan = ipaddress.ip_network(plan.lan_subnet, strict=False)
        roles = {
            self.client_address: "client",
            plan.host_address: "host",
            plan.router_lan_address: "router",
        }
        if plan.client_site != "lan":
            roles[str(topology.addressing(plan).router_client_address)] = "router"

        def role_of(address: str) -> str:
            if address in roles:
                return roles[address]
            return "lan" if ipaddress.ip_address(address) in lan else "outside"

        def side_of(address: str) -> str:
            inside = ipaddress.ip_address(address) in lan
            return "lan" if inside and address != self.client_address else "client"

        view = View(
            sides={links.router_client: "client", links.router_host_port: "lan"},
            role_of=role_of,
            side_of=side_of,
            mtu={"client": plan.client_link_mtu, "lan": topology.LAN_MTU},
            forwards={f.port: f"{f.to_address}:{f.to_port}" for f in plan.forwards},
            crossed="switched" if plan.client_site == "lan" else "forwarded",
        )
        cap = Capture(self.names["router"], view).start()
        self._captures.append(cap)
        return cap

    def resolve(self, name: str, timeout: float = 2.0) -> str | None:
        """Ask the lab DNS for ``name`` from the client namespace."""
        server = self.dns_server
        return self.call("client", lambda: dns.query(server, name, timeout=timeout))

    def counters(self, role: str = "router") -> dict[str, int]:
        """Packets each commented nft rule of the lab counted in ``role``'s namespace."""
        return nft.counters(self.ns(role), self.plan.run_id)

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the lab's servers and captures, delete its rules, links and namespaces."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            for cap in self._captures:
                with suppress(Exception):  # still tear the namespaces down
                    cap.stop()
            for server in self._servers:
                server.stop()
            if self.dns is not None:
                self.dns.stop()
            for thread in self._threads:
                thread.join(2)
            # the rules go with their namespaces (nftables tables are per network namespace)
        finally:
            topology.teardown(self.names, self.links)
            unregister(id(self))

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build(plan: NetPlan) -> NetLab:
    """Check the machine, remove dead runs' leftovers, build ``plan``."""
    require()
    cleanup_stale()
    return NetLab(plan)._build()


__all__ = [
    "Capture",
    "Forward",
    "LadderEvent",
    "NetLab",
    "NetPlan",
    "NetlabError",
    "NetlabUnavailable",
    "build",
    "chain_identity",
    "cleanup_stale",
    "render",
    "require",
    "server_flight_size",
]
