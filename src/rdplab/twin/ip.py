"""IPv4 configuration twin: the machine's interfaces, their addresses, DHCP and gateway.

Each interface has an alias (Windows' InterfaceAlias, "Ethernet" on a one-NIC machine),
whether DHCP is on, its IPv4 addresses with their Windows ``PrefixOrigin`` ("Dhcp" or
"Manual") and its default gateway. Microsoft Learn, NetTCPIP module (docs/sources.md,
section 17): ``New-NetIPAddress`` on an interface with DHCP on turns DHCP off; the
``Set-NetIPInterface -Dhcp`` setting lives in the active store and survives reboots.

Two ops change it (``rdplab.ops``): ``ip.static`` (the seed article's "assign a static IP
to the host PC") and ``ip.dhcp.lease``, a lab break that moves the DHCP lease (on a real
network the DHCP server does that, so agent.ps1 refuses it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from rdplab.errors import OpError

DEFAULT_ALIAS = "Ethernet"
#: Windows PrefixOrigin names the twin models (Get-NetIPAddress -PrefixOrigin).
ORIGINS = ("Dhcp", "Manual")
#: The prefix a lease gets on an interface that has no address yet: the lab's one /24.
LEASE_PREFIX = 24


class IpAddress(TypedDict):
    """One IPv4 address of an interface, as the facts and the snapshot carry it."""

    address: str
    prefix: int
    origin: str  # Dhcp | Manual


@dataclass
class Interface:
    alias: str = DEFAULT_ALIAS
    dhcp: bool = True
    addresses: list[IpAddress] = field(default_factory=list)
    gateway: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "dhcp": self.dhcp,
            "addresses": [dict(a) for a in self.addresses],
            "gateway": self.gateway,
        }

    def describe(self) -> str:
        """How the interface is configured, for op details: "DHCP 192.168.56.11/24",
        "static 10.0.0.5/24", "DHCP, no address" (agent.ps1's Format-IpInterface)."""
        kind = "DHCP" if self.dhcp else "static"
        if not self.addresses:
            return f"{kind}, no address"
        return kind + " " + ", ".join(f"{a['address']}/{a['prefix']}" for a in self.addresses)


def wants_ip(request: Mapping[str, Any]) -> bool:
    """Whether a gather request asks for the ``ip`` section: ``"ip": true`` or a non-empty
    list (``Fault.gather_needs`` values are lists, e.g. ``["ipv4"]``; IPv4 is the one
    family gathered whatever the list names). agent.ps1's Test-IpRequested is the same."""
    value = request.get("ip")
    if isinstance(value, bool):
        return value
    if isinstance(value, list):
        return len(value) > 0
    return False


def check_ipv4(op: str, value: str) -> str:
    """The address in canonical dotted quads, or OpError (Python's strict parsing: no
    leading zeros, four decimal octets; agent.ps1's Test-Ipv4Text is the same)."""
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise OpError(f"{op}: {value!r} is not an IPv4 address") from None


@dataclass
class IpConfig:
    interfaces: list[Interface] = field(default_factory=list)

    @classmethod
    def lab_default(
        cls, address: str, prefix: int = LEASE_PREFIX, gateway: str | None = None
    ) -> IpConfig:
        """One "Ethernet" interface with DHCP on, holding ``address`` from its lease."""
        return cls(
            [
                Interface(
                    DEFAULT_ALIAS,
                    True,
                    [IpAddress(address=address, prefix=prefix, origin="Dhcp")],
                    gateway,
                )
            ]
        )

    def find(self, alias: str) -> Interface | None:
        """The interface with that alias (compared case-insensitively, as Windows does)."""
        low = alias.lower()
        return next((i for i in self.interfaces if i.alias.lower() == low), None)

    def interface(self, op: str, alias: str) -> Interface:
        found = self.find(alias)
        if found is None:
            raise OpError(f"{op}: no IPv4 interface named {alias!r}")
        return found

    def address(self) -> str | None:
        """The first IPv4 address of the first interface (None without one)."""
        for iface in self.interfaces[:1]:
            for a in iface.addresses[:1]:
                return a["address"]
        return None

    # -- ops ----------------------------------------------------------------------------------
    def set_static(
        self, alias: str, address: str, prefix: int, gateway: str | None = None
    ) -> tuple[bool, str]:
        """ip.static: the interface ends with DHCP off and exactly ``address/prefix``
        (origin Manual). The default gateway becomes ``gateway``; without one it stays as
        it was (a gateway the DHCP lease gave is kept, now as a static route). Returns
        (changed, detail)."""
        op = "ip.static"
        iface = self.interface(op, alias)
        address = check_ipv4(op, address)
        if not 1 <= prefix <= 32:
            raise OpError(f"{op}: prefix must be 1 to 32, not {prefix}")
        net = ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
        want_gw = iface.gateway if gateway is None else check_ipv4(op, gateway)
        if want_gw is not None:
            if ipaddress.IPv4Address(want_gw) not in net:
                raise OpError(f"{op}: gateway {want_gw} is not in {net}")
            if want_gw == address:
                raise OpError(f"{op}: gateway {want_gw} is the address itself")
        want = [IpAddress(address=address, prefix=prefix, origin="Manual")]
        shown = f"static {address}/{prefix}" + (f", gateway {want_gw}" if want_gw else "")
        if not iface.dhcp and iface.addresses == want and iface.gateway == want_gw:
            return False, f"{iface.alias} already {shown}"
        was = iface.describe()
        iface.dhcp = False
        iface.addresses = want
        iface.gateway = want_gw
        return True, f"{iface.alias}: {shown} (was {was})"

    def move_lease(self, alias: str, address: str) -> tuple[bool, str]:
        """ip.dhcp.lease (lab break): the DHCP server handed the interface another address.
        DHCP stays on; the lease's prefix is kept (24 on an interface without one)."""
        op = "ip.dhcp.lease"
        iface = self.interface(op, alias)
        address = check_ipv4(op, address)
        if not iface.dhcp:
            raise OpError(f"{op}: DHCP is off on {iface.alias!r}: no lease to move")
        prefix = iface.addresses[0]["prefix"] if iface.addresses else LEASE_PREFIX
        want = [IpAddress(address=address, prefix=prefix, origin="Dhcp")]
        if iface.addresses == want:
            return False, f"{iface.alias} already leased {address}/{prefix}"
        was = iface.describe()
        iface.addresses = want
        return True, f"{iface.alias}: DHCP lease {address}/{prefix} (was {was})"

    # -- JSON -----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The facts' ``ip`` section and the snapshot's ``ip`` area (the same shape)."""
        return {"interfaces": [i.to_json() for i in self.interfaces]}

    @classmethod
    def from_json(cls, data: Any) -> IpConfig:
        """Read an ``ip`` section; ValueError names the first bad field by its path
        (``ip.interfaces[0].addresses[1].prefix``)."""
        if not isinstance(data, dict) or not isinstance(data.get("interfaces"), list):
            raise ValueError("'ip.interfaces' is missing or not a list")
        out = cls()
        for n, raw in enumerate(data["interfaces"]):
            where = f"ip.interfaces[{n}]"
            if not isinstance(raw, dict):
                raise ValueError(f"{where!r} is not an object")
            alias = raw.get("alias")
            if not isinstance(alias, str) or not alias:
                raise ValueError(f"'{where}.alias' is not a non-empty string: {alias!r}")
            if out.find(alias) is not None:
                raise ValueError(f"'{where}.alias' repeats the interface {alias!r}")
            dhcp = raw.get("dhcp")
            if not isinstance(dhcp, bool):
                raise ValueError(f"'{where}.dhcp' is not a boolean: {dhcp!r}")
            gateway = raw.get("gateway")
            if gateway is not None and not _is_ipv4(gateway):
                raise ValueError(f"'{where}.gateway' is not an IPv4 address or null: {gateway!r}")
            addresses = raw.get("addresses")
            if not isinstance(addresses, list):
                raise ValueError(f"'{where}.addresses' is not a list")
            out.interfaces.append(
                Interface(
                    alias,
                    dhcp,
                    [_address(f"{where}.addresses[{k}]", a) for k, a in enumerate(addresses)],
                    gateway,
                )
            )
        return out


def _is_ipv4(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _address(where: str, raw: Any) -> IpAddress:
    if not isinstance(raw, dict):
        raise ValueError(f"{where!r} is not an object")
    address, prefix, origin = raw.get("address"), raw.get("prefix"), raw.get("origin")
    if not _is_ipv4(address):
        raise ValueError(f"'{where}.address' is not an IPv4 address: {address!r}")
    if not isinstance(prefix, int) or isinstance(prefix, bool) or not 0 <= prefix <= 32:
        raise ValueError(f"'{where}.prefix' is not an integer from 0 to 32: {prefix!r}")
    if origin not in ORIGINS:
        raise ValueError(f"'{where}.origin' is not one of {ORIGINS}: {origin!r}")
    return IpAddress(address=str(address), prefix=prefix, origin=str(origin))
