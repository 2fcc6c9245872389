"""rdp-disabled: Remote Desktop connections are denied (fDenyTSConnections=1).

HKLM\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server\\fDenyTSConnections: 1 denies,
0 allows; a Group Policy copy under ...\\Policies\\Microsoft\\Windows NT\\Terminal Services
overrides it (docs/sources.md s3, s11). With connections denied nothing accepts on the
RDP port: the client's SYN is answered with a reset.
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

ID = "rdp-disabled"


def detect(ctx: DetectContext) -> list[Finding]:
    deny = ctx.host.effective("deny_ts_connections")
    if deny.value == 0:
        return []
    return [
        finding(
            ID,
            "host",
            "Remote Desktop connections are denied",
            setting=deny.describe("fDenyTSConnections"),
        )
    ]


FIX = Fix(
    "allow-connections",
    "Remove a denying policy value and set fDenyTSConnections=0.",
    {
        "host": (
            op("reg.delete", key=win.TS_POLICY_KEY, name="fDenyTSConnections"),
            reg_dword(win.TS_KEY, "fDenyTSConnections", 0),
        )
    },
)

FAULT = Fault(
    id=ID,
    title="Remote Desktop disabled on the host",
    symptom=Symptom("tcp", "The connection is refused: nothing accepts on the RDP port."),
    explanation=(
        "Remote Desktop is off on a fresh Windows install: the registry value "
        "fDenyTSConnections is 1. Someone (or a policy, which wins over the local "
        "setting) turned it off again here, so the host refuses every connection even "
        "though the service runs and the firewall is open. Check System Properties > "
        "Remote, or the value under Terminal Server and its policy twin. The fix removes "
        "a denying policy value and sets the local value back to 0."
    ),
    placements=(
        Placement("host", {"host": (reg_dword(win.TS_KEY, "fDenyTSConnections", 1),)}, (FIX,)),
        Placement(
            "host",
            {"host": (reg_dword(win.TS_POLICY_KEY, "fDenyTSConnections", 1),)},
            (FIX,),
            variant="policy",
        ),
    ),
    detect=detect,
    sources=(
        "Microsoft Learn: Allow access to your PC / fDenyTSConnections (docs/sources.md s11)",
        "Group Policy: Allow users to connect remotely by using Remote Desktop Services",
    ),
)
