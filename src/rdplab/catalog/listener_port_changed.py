"""listener-port-changed: the RDP-Tcp listener moved off the port clients dial.

...\\WinStations\\RDP-Tcp\\PortNumber sets the listener's TCP port (default 3389); a change
takes effect when TermService restarts (Microsoft Learn, "Change the listening port for
Remote Desktop"; docs/sources.md s10). Clients still dialing 3389 are refused.
"""

from __future__ import annotations

from rdplab import windows as win
from rdplab.catalog.base import (
    DetectContext,
    Fault,
    Finding,
    Fix,
    Placement,
    Symptom,
    finding,
    op,
    reg_dword,
)

ID = "listener-port-changed"
MOVED_TO = 3390


def detect(ctx: DetectContext) -> list[Finding]:
    port = ctx.host.listener_port
    if port == ctx.net.port:
        return []
    return [
        finding(
            ID,
            "host",
            f"RDP-Tcp listens on {port}, clients dial {ctx.net.port}",
            PortNumber=port,
            client_port=ctx.net.port,
        )
    ]


FIX = Fix(
    "restore-port",
    "Set PortNumber back to the port clients use and restart TermService.",
    {
        "host": (
            reg_dword(win.RDP_TCP_KEY, "PortNumber", "{port}"),
            op("svc.restart", name=win.TERMSERVICE, if_changed=True),
        )
    },
)

FAULT = Fault(
    id=ID,
    title="RDP listener port changed",
    symptom=Symptom("tcp", "The connection is refused on 3389: the listener is elsewhere."),
    explanation=(
        "The Remote Desktop listener's port is a registry value (RDP-Tcp\\PortNumber, 3389 "
        "by default). Someone moved it, perhaps to dodge scanners, and restarted the "
        "service; clients that still dial 3389 are refused, and the firewall rules still "
        "open the old port. Either tell clients the new port (host:port) or put the "
        "listener back; the lab's fix puts it back and restarts TermService."
    ),
    placements=(
        Placement(
            "host",
            {
                "host": (
                    reg_dword(win.RDP_TCP_KEY, "PortNumber", MOVED_TO),
                    op("svc.restart", name=win.TERMSERVICE),
                )
            },
            (FIX,),
        ),
    ),
    detect=detect,
    sources=(
        "Microsoft Learn: Change the listening port for Remote Desktop (docs/sources.md s10)",
    ),
)
