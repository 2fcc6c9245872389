"""cert-revocation-unreachable: the client cannot check the host certificate's revocation.

When the host presents a CA-issued certificate, the client checks its revocation at the
CRL distribution point the certificate names. If that location cannot be reached, the
client refuses the server certificate. The seed article's workaround is the policy value
AllowCertRevocationCheck=0 under ...\\Terminal Services\\Client, which turns the check off
and so lowers security; the safe fix makes the CRL reachable. NOTE: Microsoft documents no
such value and TerminalServer.admx writes none (docs/sources.md s2); the twin honours it as
the article describes, and on real Windows it may do nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

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
    reg_dword,
)
from rdplab.facts import Facts
from rdplab.twin.certs import RD_STORE

ID = "cert-revocation-unreachable"


def presented_certificate(ctx: DetectContext) -> dict[str, object] | None:
    bound = ctx.host.value(win.RDP_TCP_KEY, "SSLCertificateSHA1Hash")
    certs = [c for store in ctx.host.raw["certificates"].values() for c in store]
    if bound is not None:
        return next((c for c in certs if c["thumbprint"] == str(bound).upper()), None)
    return next((c for c in ctx.host.certificates(RD_STORE) if c["key"] == "ok"), None)


PROBED_SCHEMES = ("http", "https")


def probed(url: str) -> bool:
    """Whether a CRL location is one the lab probes: http and https. An ``ldap:///CN=...``
    location (what an enterprise CA publishes) names no host; the lab does not speak LDAP,
    so such a location is reported as not probed, never as unreachable."""
    return urlsplit(url).scheme.lower() in PROBED_SCHEMES


def probe_urls(host_facts_raw: dict[str, object]) -> list[str]:
    """The probed CRL locations of the host's certificates, for the client's gather."""
    stores = host_facts_raw.get("certificates") or {}
    assert isinstance(stores, dict)
    return sorted(
        {u for certs in stores.values() for c in certs for u in c.get("cdp", []) if probed(u)}
    )


def gather_needs(role: Role, gathered: Mapping[Role, Facts]) -> Mapping[str, list[str]]:
    """The client probes the CRL locations of the host's certificates (so the host is
    gathered first), the way its revocation check would fetch them."""
    if role != "client" or "host" not in gathered:
        return {}
    return {"probe_urls": probe_urls(gathered["host"].raw)}


def detect(ctx: DetectContext) -> list[Finding]:
    cert = presented_certificate(ctx)
    if not cert or not cert.get("cdp"):
        return []
    check = ctx.client.effective("revocation_check")
    if check.value == 0:
        return []
    cdp = [str(u) for u in cert["cdp"]]  # type: ignore[attr-defined]
    # Windows tries the locations in turn and needs one CRL: any location that answers is
    # enough (RFC 5280 4.2.1.13: each distribution point is an alternative source).
    judged = [u for u in cdp if probed(u)]
    if not judged:
        return []  # only LDAP (or other) locations: the lab cannot tell
    probes = {u: ctx.client.probe(u) for u in judged}
    if any(p and p["reachable"] for p in probes.values()):
        return []
    return [
        finding(
            ID,
            "client",
            "the client cannot reach any CRL location of the host's certificate",
            certificate=cert["thumbprint"],
            unreachable={u: p["detail"] if p else "not probed" for u, p in probes.items()},
            not_probed=[u for u in cdp if not probed(u)],
            revocation_check=check.describe("AllowCertRevocationCheck"),
        )
    ]


REACH = Fix(
    "make-crl-reachable",
    "Remove the hosts-file entry that sinkholes the CRL server, so the check can complete.",
    {"client": (op("hosts.remove", name="{pki.name}"),)},
)
NO_CHECK = Fix(
    "disable-revocation-check",
    "Set AllowCertRevocationCheck=0 on the client (the seed article's workaround).",
    {"client": (reg_dword(win.TS_CLIENT_POLICY_KEY, "AllowCertRevocationCheck", 0),)},
    risk="lowers-security",
    leaves=(
        "client:registry/*Terminal Services\\Client/AllowCertRevocationCheck/*",
        "client:hosts/{pki.name}",
    ),
)

FAULT = Fault(
    id=ID,
    title="Certificate revocation check cannot complete",
    symptom=Symptom("tls", "The client refuses the host's certificate: revocation status unknown."),
    explanation=(
        "When the host uses a certificate from a CA, the client checks that it has not "
        "been revoked by downloading the CA's revocation list (CRL) from the address in "
        "the certificate. If the client cannot reach that address (a proxy, a firewall, a "
        "hosts-file sinkhole, no internet on the client's network), it cannot prove the "
        "certificate is good and refuses to continue. The safe fix is to make the CRL "
        "reachable. Turning the check off (AllowCertRevocationCheck=0) also works, but the "
        "client would then accept a revoked certificate, so rdplab applies it only when a "
        "scenario opts in."
    ),
    placements=(
        Placement(
            "client",
            {
                "host": (
                    op(
                        "cert.import",
                        store="My",
                        pfx="{issued.pfx}",
                        thumbprint="{issued.thumbprint}",
                        password="{issued.pfx_password}",
                    ),
                    op(
                        "reg.set",
                        key=win.RDP_TCP_KEY,
                        name="SSLCertificateSHA1Hash",
                        type="REG_BINARY",
                        data="{issued.thumbprint}",
                    ),
                ),
                "client": (op("hosts.set", name="{pki.name}", address="0.0.0.0"),),
            },
            (REACH, NO_CHECK),
            leaves=("host:certificates/*", "host:registry/*RDP-Tcp/SSLCertificateSHA1Hash/*"),
        ),
    ),
    detect=detect,
    gather_needs=gather_needs,
    sources=(
        "Seed article: AllowCertRevocationCheck=0 under ...\\Terminal Services\\Client",
        "docs/sources.md s2: the value is not in Microsoft documentation or TerminalServer.admx",
    ),
)
