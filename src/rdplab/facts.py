"""Typed facts: one machine's RDP-relevant state, as one gather call returns it.

The document is the same whether the twin or agent.ps1 produced it; ``Facts.parse``
rejects anything malformed with a message naming the machine and the field, so garbage
from an agent never reaches a detector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rdplab import mslicensing, policy
from rdplab import windows as win
from rdplab.errors import BackendError
from rdplab.twin.firewall import Firewall, Rule, Verdict
from rdplab.twin.ip import IpConfig

if TYPE_CHECKING:
    from rdplab.network import Network

_SECTIONS = {
    "computer": dict,
    "registry": dict,
    "firewall": dict,
    "services": dict,
    "certificates": dict,
    "dns": dict,
    "credssp": dict,
    "hotfixes": list,
    "probes": dict,
}


@dataclass
class Facts:
    machine: str
    raw: dict[str, Any]
    _fw: Firewall | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, machine: str, raw: Any) -> Facts:
        if not isinstance(raw, dict):
            raise BackendError(machine, f"facts must be a JSON object, got {type(raw).__name__}")
        for name, kind in _SECTIONS.items():
            if not isinstance(raw.get(name), kind):
                raise BackendError(
                    machine, f"facts field {name!r} is missing or not a {kind.__name__}"
                )
        version = raw["credssp"].get("tspkg_version")
        if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+\.\d+\.\d+", version):
            raise BackendError(
                machine, f"facts field credssp.tspkg_version is not a file version: {version!r}"
            )
        events = raw.get("events")  # optional: only when the gather request named events
        if events is not None and not (
            isinstance(events, list)
            and all(
                isinstance(e, dict)
                and isinstance(e.get("provider"), str)
                and isinstance(e.get("id"), int)
                for e in events
            )
        ):
            raise BackendError(
                machine, "facts field 'events' is not a list of {provider, id, ...} objects"
            )
        if "ip" in raw:  # optional: only when the gather request asked for ip
            try:
                IpConfig.from_json(raw["ip"])
            except ValueError as exc:
                raise BackendError(machine, f"facts field {exc}") from None
        facts = cls(machine, raw)
        try:
            facts._fw = Firewall.from_json(raw["firewall"])
            facts.credssp_patched  # noqa: B018 - validates the tspkg.dll version string
        except Exception as exc:  # any malformed section
            raise BackendError(machine, f"facts are malformed: {exc}") from None
        return facts

    # -- registry ---------------------------------------------------------------------------
    def _key(self, key: str) -> dict[str, Any] | None:
        low = key.lower()
        for path, body in self.raw["registry"].items():
            if path.lower() == low:
                return body  # type: ignore[no-any-return]
        return None

    def key_exists(self, key: str) -> bool:
        return self._key(key) is not None

    def value(self, key: str, name: str) -> Any:
        body = self._key(key)
        if body is None:
            return None
        for vname, v in body.get("values", {}).items():
            if vname.lower() == name.lower():
                return v["data"]
        return None

    # -- derived views ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.raw["computer"]["name"])

    @property
    def firewall(self) -> Firewall:
        assert self._fw is not None
        return self._fw

    def fw_rules(self, **match: Any) -> list[Rule]:
        return [r for r in self.firewall.rules if r.matches(match)]

    def inbound(self, port: int, program: str | None = None, net: Network | None = None) -> Verdict:
        """Would inbound TCP ``port`` pass? With ``net``, from the lab's client address (rules
        scoped by RemoteAddress apply as Windows applies them); without, scopes are ignored."""
        if net is None:
            return self.firewall.evaluate("In", "TCP", port, program)
        return self.firewall.evaluate(
            "In", "TCP", port, program, peer=net.peer_address, local_subnet=net.subnet
        )

    def outbound(self, port: int) -> Verdict:
        return self.firewall.evaluate("Out", "TCP", port)

    def service(self, name: str) -> dict[str, Any] | None:
        for n, s in self.raw["services"].items():
            if n.lower() == name.lower():
                return s  # type: ignore[no-any-return]
        return None

    def certificates(self, store: str) -> list[dict[str, Any]]:
        return list(self.raw["certificates"].get(store, []))

    @property
    def hosts(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.raw["dns"].get("hosts", {}).items()}

    @property
    def dns_cache(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.raw["dns"].get("cache", {}).items()}

    @property
    def tspkg_version(self) -> str:
        return str(self.raw["credssp"]["tspkg_version"])

    @property
    def credssp_patched(self) -> bool:
        return win.credssp_patched(self.tspkg_version)

    def mslicensing_problems(self) -> list[str]:
        return mslicensing.problems(self.raw["registry"])

    def events(self, wanted: tuple[str, ...] | list[str]) -> list[dict[str, Any]] | None:
        """Gathered System-log events whose "provider/id" is wanted, newest first; None
        when the facts hold no events section (not requested, or an agent that does not
        gather events)."""
        if "events" not in self.raw:
            return None
        keys = {w.lower() for w in wanted}
        return [e for e in self.raw["events"] if f"{e['provider']}/{e['id']}".lower() in keys]

    @property
    def ip_gathered(self) -> bool:
        """Whether the facts hold the ``ip`` section (the gather request asked for ip)."""
        return "ip" in self.raw

    def ip_interfaces(self) -> list[dict[str, Any]]:
        """The gathered IPv4 interfaces (alias, dhcp, addresses, gateway); [] when the
        section was not gathered."""
        if "ip" not in self.raw:
            return []
        return list(self.raw["ip"]["interfaces"])

    def ipv4(self) -> list[dict[str, Any]]:
        """Every gathered IPv4 address, flattened: alias, address, prefix, origin (Dhcp or
        Manual) and the interface's dhcp flag, in interface order; [] when the ``ip``
        section was not gathered."""
        return [
            {
                "alias": iface["alias"],
                "address": a["address"],
                "prefix": a["prefix"],
                "origin": a["origin"],
                "dhcp": iface["dhcp"],
            }
            for iface in self.ip_interfaces()
            for a in iface["addresses"]
        ]

    def probe(self, url: str) -> dict[str, Any] | None:
        return self.raw["probes"].get(url)  # type: ignore[no-any-return]

    # policy-aware settings
    def effective(self, which: str) -> policy.Effective:
        return getattr(policy, which)(self.value)  # type: ignore[no-any-return]

    @property
    def listener_port(self) -> int:
        return policy.listener_port(self.value)
