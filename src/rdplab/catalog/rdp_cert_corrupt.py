"""rdp-cert-corrupt: the listener's self-signed certificate has no usable private key.

TermService keeps its self-signed certificate in the LocalMachine "Remote Desktop" store
and the key under %ProgramData%\\Microsoft\\Crypto\\RSA\\MachineKeys. With the key file
corrupt, the TLS handshake after X.224 fails. Deleting the certificate and restarting
TermService makes it create a fresh one (docs/sources.md s6; seed article: a reboot
recreates it).
"""

from __future__ import annotations

from rdplab import windows as win
from rdplab.catalog.base import DetectContext, Fault, Finding, Fix, Placement, Symptom, finding, op
from rdplab.twin.certs import RD_STORE

ID = "rdp-cert-corrupt"


def detect(ctx: DetectContext) -> list[Finding]:
    bound = ctx.host.value(win.RDP_TCP_KEY, "SSLCertificateSHA1Hash")
    certs = [c for store in ctx.host.raw["certificates"].values() for c in store]
    if bound is not None:
        chosen = [c for c in certs if c["thumbprint"] == str(bound).upper()]
        where = f"bound by SSLCertificateSHA1Hash={str(bound).upper()}"
    else:
        chosen = ctx.host.certificates(RD_STORE)
        where = f"'{RD_STORE}' store"
    if any(c["key"] == "ok" for c in chosen):
        return []
    return [
        finding(
            ID,
            "host",
            f"no certificate with a usable private key ({where})",
            certificates=[
                {"thumbprint": c["thumbprint"], "key": c["key"], "key_file": c["key_file"]}
                for c in chosen
            ],
        )
    ]


FIX = Fix(
    "regenerate",
    "Delete the unusable certificate (and its key file), restart TermService to make a new one.",
    {
        "host": (
            op("cert.remove", store=RD_STORE, which="unusable"),
            op("svc.restart", name=win.TERMSERVICE, if_changed=True),
        )
    },
    leaves=("host:certificates/*",),
)

FAULT = Fault(
    id=ID,
    title="Corrupt RDP certificate / MachineKeys private key",
    symptom=Symptom(
        "tls", "The connection drops right after negotiation: the TLS handshake fails."
    ),
    explanation=(
        "Remote Desktop encrypts the session with TLS using a self-signed certificate that "
        "TermService makes for itself and keeps in the 'Remote Desktop' certificate store. "
        "Its private key is a file in the MachineKeys folder. If that file is damaged or "
        "its permissions are wrong, TermService still offers the certificate but cannot "
        "use the key, so every TLS handshake fails. Deleting the broken certificate and "
        "restarting TermService (or rebooting) makes Windows create a healthy one."
    ),
    placements=(Placement("host", {"host": (op("machinekeys.corrupt", store=RD_STORE),)}, (FIX,)),),
    detect=detect,
    sources=(
        "Microsoft Learn: Remote Desktop listener certificate configurations (docs/sources.md s6)",
        "Seed article: rebooting recreates a healthy folder and fresh certificates",
    ),
)
