"""rdp-cert-corrupt: the listener's self-signed certificate has no usable private key.

TermService keeps its self-signed certificate in the LocalMachine "Remote Desktop" store
and the key under %ProgramData%\\Microsoft\\Crypto\\RSA\\MachineKeys. With the key file
corrupt, the TLS handshake after X.224 fails. Microsoft documents what the user sees as
"An internal error has occurred" and, on the host, TermService events 1057/1058 and
Schannel 36870 (0x8009030D); the seed article counts the failure among 0x904 causes.
Deleting the certificate and restarting the Remote Desktop Services service makes it
create a fresh one ("General Remote Desktop connection troubleshooting"; docs/sources.md
s6; seed article: a reboot recreates it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rdplab import windows as win
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
from rdplab.twin.certs import RD_STORE

ID = "rdp-cert-corrupt"


def detect(ctx: DetectContext) -> list[Finding]:
    """Two broken states, both seen from the host's facts:

    - the certificate the listener uses (the one SSLCertificateSHA1Hash binds, else the
      'Remote Desktop' store's) has no usable private key: TLS fails now;
    - a certificate in the 'Remote Desktop' store has a corrupt key while another one is
      bound: TLS works today, but the self-signed certificate is what TermService falls
      back to when the binding goes, and it will not make a new one while the broken one
      is there (event 1057). Still a finding: broken state the detectors can see is
      reported, whether or not the current connection meets it."""
    bound = ctx.host.value(win.RDP_TCP_KEY, "SSLCertificateSHA1Hash")
    certs = [c for store in ctx.host.raw["certificates"].values() for c in store]
    store_certs = ctx.host.certificates(RD_STORE)
    if bound is not None:
        chosen = [c for c in certs if c["thumbprint"] == str(bound).upper()]
        where = f"bound by SSLCertificateSHA1Hash={str(bound).upper()}"
    else:
        chosen = store_certs
        where = f"'{RD_STORE}' store"
    if not any(c["key"] == "ok" for c in chosen):
        return [_finding(f"no certificate with a usable private key ({where})", chosen, ctx)]
    fallback = [c for c in store_certs if c not in chosen]
    if bound is not None and fallback and not any(c["key"] == "ok" for c in fallback):
        return [
            _finding(
                f"the '{RD_STORE}' store's certificate has no usable private key; not in use"
                f" now ({where}), but TermService falls back to it when the binding goes",
                fallback,
                ctx,
            )
        ]
    return []


def _finding(summary: str, certs: list[dict[str, Any]], ctx: DetectContext) -> Finding:
    return finding(
        ID,
        "host",
        summary,
        certificates=[
            {"thumbprint": c["thumbprint"], "key": c["key"], "key_file": c["key_file"]}
            for c in certs
        ],
        **_events(ctx.host),
    )


def _events(host: Facts) -> dict[str, object]:
    """The host's TermService/Schannel events about the key, when they were gathered:
    evidence to cite, never a reason to fire (an old event outlives its cause)."""
    events = host.events(win.CERT_KEY_EVENTS)
    if events is None:
        return {}
    return {
        "events": [
            {k: e[k] for k in ("provider", "id", "time", "message") if k in e} for e in events
        ]
    }


def gather_needs(role: Role, gathered: Mapping[Role, Facts]) -> Mapping[str, list[str]]:
    """The host's System-log events 1057/1058 (TermService) and 36870 (Schannel)."""
    return {"events": list(win.CERT_KEY_EVENTS)} if role == "host" else {}


FIX = Fix(
    "regenerate",
    "Delete the unusable certificate (and its key file), restart TermService to make a new"
    " one. If none appears: CertPropSvc, KeyIso, CryptSvc and SessionEnv must be running,"
    " and MachineKeys must grant Administrators Full control, Everyone Read and Write.",
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
        "tls",
        "An internal error has occurred. (The connection drops right after negotiation:"
        " the TLS handshake fails.)",
        code_source="Microsoft Learn, 'An internal error has occurred' when connecting to a"
        " remote machine: the dialog, no code given; the seed article counts the failure"
        " among 0x904 causes, and 0x904/0x7 is the socket closing before a session existed",
    ),
    explanation=(
        "Remote Desktop encrypts the session with TLS using a self-signed certificate that "
        "TermService makes for itself and keeps in the 'Remote Desktop' certificate store. "
        "Its private key is a file in the MachineKeys folder. If that file is damaged or "
        "its permissions are wrong, TermService still offers the certificate but cannot "
        "use the key, so every TLS handshake fails. Microsoft documents what the user then "
        "sees as 'An internal error has occurred'; the seed article lists the same failure "
        "among the causes of error 0x904. On the host, the System log shows TermService "
        "event 1057 (it failed to create a new self-signed certificate, 'Keyset does not "
        "exist') or 1058 (it failed to replace an expired one), and Schannel event 36870 "
        "(it could not reach the TLS server credential's private key, 0x8009030D). The fix "
        "Microsoft gives: delete the certificate from the 'Remote Desktop' store and restart "
        "the Remote Desktop Services service (or reboot); Windows creates a healthy one. If "
        "it does not come back, check that the services it needs are running (CertPropSvc, "
        "KeyIso, CryptSvc, SessionEnv) and that the MachineKeys folder grants "
        "Administrators Full control and Everyone Read and Write."
    ),
    placements=(
        Placement(
            "host",
            {
                "host": (
                    op("machinekeys.corrupt", store=RD_STORE),
                    # the next TermService start meets the bad key (a reboot would too)
                    op("svc.restart", name=win.TERMSERVICE),
                )
            },
            (FIX,),
        ),
    ),
    detect=detect,
    gather_needs=gather_needs,
    sources=(
        "Microsoft Learn: General Remote Desktop connection troubleshooting (delete the"
        " certificate, restart Remote Desktop Services, check MachineKeys permissions)",
        "Microsoft Learn: 'An internal error has occurred' when connecting to a remote machine"
        " (the dialog; CertPropSvc, KeyIso, CryptSvc, SessionEnv must run)",
        "Microsoft Learn: Troubleshoot Azure VM RDP connection issues by Event ID (events"
        " 1057, 1058, Schannel 36870 0x8009030D)",
        "Seed article: listed among 0x904 causes; rebooting recreates fresh certificates",
        "docs/sources.md s6",
    ),
)
