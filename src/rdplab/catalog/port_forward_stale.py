"""port-forward-stale: the router forwards RDP to the host's old address.

The host got its address from DHCP; the lease moved (a renewal after downtime, a new
router, a reservation that was never made), and the port forward still points at the old
address, where nobody answers. The outside client times out at TCP: 0x904. The detector
needs both machines: the router's forward and the host's own address. The seed article's
order of repair: give the host a static address (or a DHCP reservation), then point the
forward at it.
"""

from __future__ import annotations

from collections.abc import Mapping

from rdplab.catalog.base import (
    DetectContext,
    Fault,
    Finding,
    Fix,
    Placement,
    Role,
    Symptom,
    finding,
    op,
)
from rdplab.facts import Facts

ID = "port-forward-stale"
ALIAS = "Ethernet"  # the lab host's one interface (Windows names the first one so)


def host_addresses(host: Facts) -> list[dict[str, object]]:
    ip = host.raw.get("ip")
    if not isinstance(ip, dict):
        return []
    return [
        {**a, "alias": i.get("alias"), "dhcp": i.get("dhcp")}
        for i in ip.get("interfaces") or []
        for a in i.get("addresses") or []
    ]


def detect(ctx: DetectContext) -> list[Finding]:
    if ctx.router is None:
        return []
    port = ctx.net.target_port
    fwd = (ctx.router.raw.get("forwards") or {}).get(str(port))
    addresses = host_addresses(ctx.host)
    if fwd is None or not addresses:
        return []  # nothing forwarded (port-forward-missing) or the host's address unknown
    if any(a.get("address") == fwd["to"] for a in addresses):
        return []
    return [
        finding(
            ID,
            "router",
            f"the router forwards TCP {port} to {fwd['to']}, but the host is at"
            f" {', '.join(str(a['address']) for a in addresses)}",
            forward=fwd,
            host_addresses=addresses,
        )
    ]


def gather_needs(role: Role, gathered: Mapping[Role, Facts]) -> Mapping[str, list[str]]:
    """The host's IPv4 configuration (its address and where it came from)."""
    return {"ip": ["ipv4"]} if role == "host" else {}


STATIC = Fix(
    "static-address",
    "Give the host a static address (the one the lab gives it) and point the forward at it:"
    " the seed article's Step 1, then the forward.",
    {
        "host": (
            op(
                "ip.static",
                alias=ALIAS,
                address="{host.address}",
                prefix=24,
                gateway="{router.lan_address}",
            ),
        ),
        "router": (
            op("fwd.set", port="{target_port}", to="{host.address}", to_port="{target_port}"),
        ),
    },
    leaves=("host:ip/*",),
)
RESERVE = Fix(
    "reserve-and-forward",
    "Reserve the address the host holds now in the router's DHCP server, and point the"
    " forward at it (no change on the host).",
    {
        "router": (
            op("dhcp.reserve", name="{host.name}", address="{host.moved_address}"),
            op("fwd.set", port="{target_port}", to="{host.moved_address}", to_port="{target_port}"),
        )
    },
    leaves=("router:dhcp_reservations/*", "router:forwards/*"),
)

FAULT = Fault(
    id=ID,
    title="Router: port forward points at the host's old address",
    symptom=Symptom(
        "tcp",
        "Remote Desktop can't connect to the remote computer (the connection times out).",
        code_source="Seed article: a host whose address changed breaks the forward (0x904);"
        " a SYN forwarded to an address where nobody answers times out (0x904/0x7)",
    ),
    explanation=(
        "A port forward names one address on the inside. If the host takes its address "
        "from DHCP, that address can change: after a long power-off, a router swap, or "
        "simply when the lease runs out and another machine took it. The forward then "
        "sends every outside connection to the old address, where nothing answers, and "
        "the client times out. On the host, ipconfig shows the address it has now; on "
        "the router, the forward shows where it sends RDP. Fix it the way the article "
        "sets it up: give the host a static address (or reserve its address in the "
        "router's DHCP server) and make the forward point at exactly that address."
    ),
    placements=(
        Placement(
            "router",
            {
                "host": (op("ip.dhcp.lease", alias=ALIAS, address="{host.moved_address}"),),
            },
            (STATIC, RESERVE),
            leaves=("host:ip/*",),
        ),
    ),
    detect=detect,
    gather_needs=gather_needs,
    client_site="outside",
    sources=(
        "Seed article: Step 1, assign a static IP address to the host PC before forwarding",
        "Microsoft Learn: New-NetIPAddress, Set-NetIPInterface -Dhcp Disabled (a static"
        " address; docs/sources.md s17)",
    ),
)
