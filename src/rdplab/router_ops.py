"""The router's op vocabulary: what a lab changes on the NAT gateway between the outside
network and the lab LAN (a home or office router, or a VPN gateway).

The same ops are implemented by the router twin (``rdplab.twin.router``), by the netns
provider's real nftables rules (``rdplab.netlab``), and written out by ``rdplab export`` as
a shell script for a Linux gateway (``rdplab.export_router``). Every op is declarative, so
a second run of the same batch changes nothing.
"""

from __future__ import annotations

from rdplab.errors import OpError
from rdplab.ops import ArgSpec, Op, OpSpec, check_args


def _a(name: str, kind: type | tuple[type, ...], required: bool = True, doc: str = "") -> ArgSpec:
    return ArgSpec(name, kind, required, doc)


ROUTER_VOCABULARY: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec(
            "fwd.set",
            "Forward the router's outside TCP port to a LAN address and port (DNAT); replaces"
            " an existing forward of that port.",
            (_a("port", int), _a("to", str), _a("to_port", int)),
        ),
        OpSpec("fwd.remove", "Remove the forward of the outside TCP port.", (_a("port", int),)),
        OpSpec(
            "dhcp.reserve",
            "Reserve a LAN address for a machine in the router's DHCP server (by name; the"
            " twin keys leases by the machine's name, a real server by its MAC address).",
            (_a("name", str), _a("address", str)),
        ),
        OpSpec(
            "mss.clamp",
            "Clamp the MSS of forwarded TCP SYNs to the route's MTU (nftables: tcp option"
            " maxseg size set rt mtu), so no segment is larger than the path.",
        ),
        OpSpec(
            "icmp.frag",
            "Pass (allow=true) or drop (allow=false) ICMP fragmentation-needed through and"
            " from the router. Dropping it breaks path MTU discovery.",
            (_a("allow", bool),),
        ),
        OpSpec(
            "link.mtu",
            "Set the MTU of the router's link toward the remote client (a VPN tunnel's MTU).",
            (_a("mtu", int),),
        ),
    )
}


def validate_router_op(op: Op) -> None:
    """Raise OpError unless ``op`` names a router op with well-typed arguments."""
    spec = ROUTER_VOCABULARY.get(op.name)
    if spec is None:
        raise OpError(
            f"unknown router op {op.name!r} (known: {', '.join(sorted(ROUTER_VOCABULARY))})"
        )
    check_args(op, spec)
