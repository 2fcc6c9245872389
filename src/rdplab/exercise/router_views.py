"""Read-only views of the lab's router (a Linux gateway), as its own tools print them:
``nft list ruleset`` (the port forwards, the MSS clamp, the ICMP policy), ``ip link`` (the
MTU of the link toward the remote client) and the DHCP server's reservations. The same
table layout rdplab's router scripts write (``rdplab.export_router``), so what a trainee
reads here is what they would type against on a real gateway."""

from __future__ import annotations

from collections.abc import Callable

from rdplab.twin.router import RouterTwin

RouterView = Callable[[RouterTwin, "str | None"], str]


def ruleset(router: RouterTwin, arg: str | None = None) -> str:
    lines = ["# nft list ruleset", "table ip rdplab_nat {", "\tchain prerouting {",
             "\t\ttype nat hook prerouting priority dstnat; policy accept;"]  # fmt: skip
    for port, f in sorted(router.forwards.items()):
        lines.append(f'\t\ttcp dport {port} dnat to {f.to}:{f.to_port} comment "rdplab-fwd-{port}"')
    lines += ["\t}", "}", "table inet rdplab_filter {", "\tchain forward {",
              "\t\ttype filter hook forward priority filter; policy accept;"]  # fmt: skip
    if router.mss_clamp:
        lines.append('\t\ttcp flags syn tcp option maxseg size set rt mtu comment "rdplab-mss"')
    if not router.icmp_frag_needed:
        lines.append(
            "\t\ticmp type destination-unreachable icmp code frag-needed drop"
            ' comment "rdplab-icmp-drop"'
        )
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def links(router: RouterTwin, arg: str | None = None) -> str:
    return (
        "# ip -br address; ip link show\n"
        f"lan      UP   {router.lan_address}/24   mtu 1500\n"
        f"outside  UP   {router.outside_address}/24   mtu 1500\n"
        f"wg0      UP   (the VPN tunnel toward remote clients)   mtu {router.link_mtu}\n"
    )


def dhcp(router: RouterTwin, arg: str | None = None) -> str:
    lines = ["# cat /etc/dnsmasq.d/rdplab.conf"]
    lines += [f"dhcp-host={name},{address}" for name, address in router.reservations.items()]
    if not router.reservations:
        lines.append("# (no reservations)")
    return "\n".join(lines) + "\n"


#: area -> (view, what ARG means)
ROUTER_AREAS: dict[str, tuple[RouterView, str]] = {
    "ruleset": (ruleset, "(none): nft list ruleset"),
    "links": (links, "(none): the router's links and their MTUs"),
    "dhcp": (dhcp, "(none): the DHCP server's reservations"),
}
