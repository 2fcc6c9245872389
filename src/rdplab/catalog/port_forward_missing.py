"""port-forward-missing: the router holds no forward for the RDP port.

From outside the home or office network the client dials the router's public address; a
NAT router passes an inbound connection on only when a port forward (DNAT) names the LAN
machine to send it to. Without one, the router drops the SYN and the client times out at
the TCP stage: 0x904. The seed article's set-up: give the host a static address, then
forward the RDP port to it.
"""

from __future__ import annotations

from rdplab.catalog.base import (
    DetectContext,
    Fault,
    Finding,
    Fix,
    Hides,
    Placement,
    Symptom,
    finding,
    op,
)

ID = "port-forward-missing"


def detect(ctx: DetectContext) -> list[Finding]:
    if ctx.router is None:
        return []
    port = ctx.net.target_port
    forwards = ctx.router.raw.get("forwards") or {}
    if str(port) in forwards:
        return []
    return [
        finding(
            ID,
            "router",
            f"the router forwards nothing on TCP {port}: a client outside cannot reach the host",
            port=port,
            forwards=sorted(forwards) or "none",
            outside_address=(ctx.router.raw.get("addresses") or {}).get("outside"),
        )
    ]


FIX = Fix(
    "add-forward",
    "Forward the RDP port on the router to the host's address (the address the lab gives"
    " the host; make it static first so the forward keeps pointing at it).",
    {
        "router": (
            op("fwd.set", port="{target_port}", to="{host.address}", to_port="{target_port}"),
        )
    },
)

FAULT = Fault(
    id=ID,
    title="Router: no port forward for Remote Desktop",
    symptom=Symptom(
        "tcp",
        "Remote Desktop can't connect to the remote computer (the connection times out).",
        code_source="Seed article: connecting from outside without port forwarding gives 0x904;"
        " a SYN the router drops ends in a timeout before any session exists (0x904/0x7)",
    ),
    explanation=(
        "At home or in a small office, the host sits behind a router that translates "
        "addresses (NAT). A client on the same network reaches the host directly, but a "
        "client outside dials the router's public address, and the router must be told "
        "which machine on the inside gets connections to port 3389: a port forward. "
        "Without one the router silently drops the connection attempt and the client "
        "waits until it gives up. Look at the router's port forwarding (or virtual server) "
        "page. The fix: give the host a fixed address first, then forward TCP 3389 to it. "
        "Safer still, do not expose RDP to the internet at all: use a VPN or an RD Gateway."
    ),
    placements=(
        Placement("router", {"router": (op("fwd.remove", port="{target_port}"),)}, (FIX,)),
    ),
    detect=detect,
    client_site="outside",
    hides=(
        Hides(
            "port-forward-stale",
            "with no forward at all there is no target to compare with the host's address:"
            " a stale forward shows only once a forward exists again (the lab's reasoning;"
            " the router's table simply has no entry)",
        ),
    ),
    sources=(
        "Seed article: Step 1, assign a static IP to the host PC; then forward the port on"
        " the router",
        "RFC 4787 / RFC 5382: a NAT passes unsolicited inbound TCP only through a configured"
        " mapping (docs/sources.md s18)",
    ),
)
