"""vpn-mtu-blackhole: the VPN path's MTU is smaller than the host's packets, and the ICMP
that would say so is dropped.

The client dials through a VPN. TCP's handshake and X.224's small packets pass; then the
host sends its TLS server flight (its certificate) in full-size segments, larger than the
tunnel can carry. The router would answer with ICMP "fragmentation needed" so that the
host sends smaller packets (path MTU discovery, RFC 1191), but a firewall drops that ICMP:
the host keeps retransmitting the same large segment and the client gives up waiting. The
seed article names an unstable VPN among the causes of 0x904.
"""

from __future__ import annotations

from rdplab.catalog.base import DetectContext, Fault, Finding, Fix, Placement, Symptom, finding, op
from rdplab.twin.router import ETHERNET_MTU

ID = "vpn-mtu-blackhole"


def detect(ctx: DetectContext) -> list[Finding]:
    if ctx.router is None:
        return []
    r = ctx.router.raw
    mtu = int(r.get("link_mtu") or ETHERNET_MTU)
    if mtu >= ETHERNET_MTU or r.get("icmp_frag_needed") != "drop" or r.get("mss_clamp"):
        return []
    return [
        finding(
            ID,
            "router",
            f"the VPN link's MTU is {mtu}, ICMP fragmentation-needed is dropped and TCP's MSS"
            " is not clamped: full-size packets from the host vanish (a path MTU black hole)",
            link_mtu=mtu,
            icmp_frag_needed=r.get("icmp_frag_needed"),
            mss_clamp=bool(r.get("mss_clamp")),
        )
    ]


CLAMP = Fix(
    "clamp-mss",
    "Clamp the TCP MSS of forwarded connections to the path MTU on the router/VPN gateway"
    " (nftables: tcp option maxseg size set rt mtu), so no segment is larger than the path.",
    {"router": (op("mss.clamp"),)},
    leaves=("router:mss_clamp", "router:icmp_frag_needed"),
)
PASS_ICMP = Fix(
    "pass-icmp-frag-needed",
    "Let ICMP fragmentation-needed through, so path MTU discovery works again (RFC 4890's"
    " advice for IPv6 holds for IPv4's type 3 code 4 too: never filter it).",
    {"router": (op("icmp.frag", allow=True),)},
    leaves=("router:link_mtu",),
)

FAULT = Fault(
    id=ID,
    title="VPN: path MTU black hole (TLS stalls)",
    symptom=Symptom(
        "tls",
        "Remote Desktop connects, then the connection drops while it is being secured"
        " (it waits, then gives up).",
        code_source="Seed article: an unstable VPN is listed among 0x904 causes; the TLS"
        " handshake never completes, so the socket closes before a session exists (0x904/0x7)",
    ),
    explanation=(
        "Over a VPN, every packet is wrapped in the tunnel's own headers, so the largest "
        "packet that fits (the MTU) is smaller than on the LAN. Small packets, such as "
        "TCP's handshake and RDP's first negotiation, get through. Then the host sends its "
        "certificate in full-size packets. They do not fit the tunnel. Normally the router "
        "answers with an ICMP 'fragmentation needed' message and the host resends smaller "
        "packets, but many firewalls drop that ICMP: the host never learns, resends the "
        "same large packet, and the client gives up. On the client, ping -f -l with "
        "growing sizes finds the largest packet that passes. The fix: clamp TCP's maximum "
        "segment size on the VPN gateway to the tunnel's MTU, or let the ICMP through, or "
        "lower the client tunnel interface's MTU (netsh interface ipv4 set subinterface)."
    ),
    placements=(
        Placement(
            "router",
            {
                "router": (
                    op("link.mtu", mtu="{router.tunnel_mtu}"),
                    op("icmp.frag", allow=False),
                )
            },
            (CLAMP, PASS_ICMP),
            leaves=("router:link_mtu",),
        ),
    ),
    detect=detect,
    client_site="vpn",
    sources=(
        "Seed article: an unstable VPN connection among the causes of 0x904",
        "RFC 1191: path MTU discovery needs ICMP 'fragmentation needed' (type 3 code 4)",
        "RFC 2923: TCP problems with path MTU discovery (black holes), MSS clamping",
        "Microsoft Learn: netsh interface ipv4 set subinterface ... mtu= (docs/sources.md s18)",
    ),
)
