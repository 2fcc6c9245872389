"""termservice-stopped: Remote Desktop Services (TermService) is stopped and disabled.

TermService owns the RDP listener; stopped, nothing accepts on the port and the client's
SYN gets a reset (docs/sources.md s5).
"""

from __future__ import annotations

from rdplab import windows as win
from rdplab.catalog.base import DetectContext, Fault, Finding, Fix, Placement, Symptom, finding, op

ID = "termservice-stopped"
DEFAULT_START = "Manual"  # TermService's shipped start type (docs/sources.md s5)


def detect(ctx: DetectContext) -> list[Finding]:
    svc = ctx.host.service(win.TERMSERVICE)
    if svc and svc["status"] == "Running" and svc["start_type"] != "Disabled":
        return []
    return [
        finding(
            ID,
            "host",
            "TermService is not running"
            if not svc or svc["status"] != "Running"
            else "TermService is disabled",
            service=svc or "absent",
        )
    ]


FIX = Fix(
    "start-termservice",
    f"Set TermService's start type back to {DEFAULT_START} and start it.",
    {
        "host": (
            op("svc.config", name=win.TERMSERVICE, start_type=DEFAULT_START),
            op("svc.start", name=win.TERMSERVICE),
        )
    },
)

FAULT = Fault(
    id=ID,
    title="Remote Desktop Services (TermService) stopped",
    symptom=Symptom("tcp", "The connection is refused: no listener."),
    explanation=(
        "The Remote Desktop Services service (TermService) runs the listener on the RDP "
        "port. Stopped, and disabled so it stays stopped, the host refuses every "
        "connection. Get-Service TermService shows it. Set its start type back and start "
        "it; when it starts it also checks its certificate."
    ),
    placements=(
        Placement(
            "host",
            {
                "host": (
                    op("svc.config", name=win.TERMSERVICE, start_type="Disabled"),
                    op("svc.stop", name=win.TERMSERVICE),
                )
            },
            (FIX,),
        ),
    ),
    detect=detect,
    sources=("Microsoft Learn: Remote Desktop Services service, TermService (docs/sources.md s5)",),
)
