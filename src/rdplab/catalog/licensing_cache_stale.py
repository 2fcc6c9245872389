"""licensing-cache-stale: the client's MSLicensing store is corrupt.

HKLM\\SOFTWARE\\Microsoft\\MSLicensing holds the client's hardware id and the licenses
RD hosts gave it. Microsoft's troubleshooting guidance: back the key up, delete it, and run
the Remote Desktop client once as administrator so it is recreated (docs/sources.md s7).
The health rule is in rdplab.mslicensing.
"""

from __future__ import annotations

from rdplab import windows as win
from rdplab.catalog.base import DetectContext, Fault, Finding, Fix, Placement, Symptom, finding, op

ID = "licensing-cache-stale"


def detect(ctx: DetectContext) -> list[Finding]:
    problems = ctx.client.mslicensing_problems()
    if not problems:
        return []
    return [finding(ID, "client", "the MSLicensing store is corrupt", problems=problems)]


FIX = Fix(
    "clear-mslicensing",
    "Back up and delete HKLM\\SOFTWARE\\Microsoft\\MSLicensing; the next elevated client run"
    " recreates it.",
    {"client": (op("licensing.clear"),)},
    leaves=("client:registry/HKLM\\SOFTWARE\\Microsoft\\MSLicensing*",),
)

FAULT = Fault(
    id=ID,
    title="Stale / corrupt client licensing cache (MSLicensing)",
    symptom=Symptom(
        "licensing",
        "The connection fails after authentication, during licensing.",
        code_source="seed article (a corrupt licensing cache can mimic 0x904); no Microsoft"
        " source for the code at this stage",
    ),
    explanation=(
        "Every Remote Desktop client keeps a small licensing store in the registry "
        "(HKLM\\SOFTWARE\\Microsoft\\MSLicensing): its hardware id and the licenses hosts "
        "have handed it. If that store is damaged, the connection gets through the network "
        "and security steps and then fails at licensing, which looks just like a network "
        "failure to the user. Deleting the key (after backing it up) is safe: the client "
        "recreates it the next time it runs as administrator."
    ),
    placements=(
        Placement(
            "client",
            {
                "client": (
                    op(
                        "reg.set",
                        key=win.MSLICENSING_KEY + r"\HardwareID",
                        name="ClientHWID",
                        type="REG_BINARY",
                        data="deadbeef",
                    ),
                    op("reg.delete", key=win.MSLICENSING_KEY + r"\Store"),
                )
            },
            (FIX,),
        ),
    ),
    detect=detect,
    sources=(
        "Microsoft Learn: RDS licensing troubleshooting, delete the MSLicensing key"
        " (docs/sources.md s7)",
        "[MS-RDPELE] 2.2.2.3.1: the client hardware id is 20 bytes",
        "Seed article: a corrupted licensing cache can mimic 0x904",
    ),
)
