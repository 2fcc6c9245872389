"""credssp-oracle-mismatch: one side lacks the 2018 CredSSP update, the other refuses it.

CVE-2018-0886 was fixed in CredSSP by the March 2018 updates; the May 8, 2018 updates
made the client side refuse unpatched servers by default. The policy value
AllowEncryptionOracle (Encryption Oracle Remediation) picks how strict a patched machine
is. KB 4093492 publishes which client/server pairs still connect; MATRIX below is that
table, cell for cell (docs/sources.md s1).
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
from rdplab.facts import Facts

ID = "credssp-oracle-mismatch"
UPDATE = "KB4103723"  # May 8, 2018 cumulative update for Windows Server 2016 (build 14393.2248)

NOT_UPDATED = "not updated"
FORCE, MITIGATED, VULNERABLE = (win.ORACLE_NAMES[i] for i in (0, 1, 2))

# (client, server) -> connects?  KB 4093492 interoperability matrix.
MATRIX: dict[tuple[str, str], bool] = {
    (NOT_UPDATED, NOT_UPDATED): True,
    (NOT_UPDATED, FORCE): False,
    (NOT_UPDATED, MITIGATED): True,
    (NOT_UPDATED, VULNERABLE): True,
    (FORCE, NOT_UPDATED): False,
    (FORCE, FORCE): True,
    (FORCE, MITIGATED): True,
    (FORCE, VULNERABLE): True,
    (MITIGATED, NOT_UPDATED): False,
    (MITIGATED, FORCE): True,
    (MITIGATED, MITIGATED): True,
    (MITIGATED, VULNERABLE): True,
    (VULNERABLE, NOT_UPDATED): True,
    (VULNERABLE, FORCE): True,
    (VULNERABLE, MITIGATED): True,
    (VULNERABLE, VULNERABLE): True,
}


def level(facts: Facts, patched: bool | None = None) -> str:
    """A machine's column/row in the matrix; ``patched`` overrides what the facts say
    about the update (a live probe saw the host's CredSSP version on the wire)."""
    if not (facts.credssp_patched if patched is None else patched):
        return NOT_UPDATED
    value = facts.effective("encryption_oracle").value
    return win.ORACLE_NAMES.get(int(value), MITIGATED)


def allowed(client: str, server: str) -> bool:
    return MATRIX[(client, server)]


def detect(ctx: DetectContext) -> list[Finding]:
    client, server = level(ctx.client), level(ctx.host)
    if allowed(client, server):
        return []
    return [
        finding(
            ID,
            "host",
            f"CredSSP blocked: client is '{client}', host is '{server}'",
            client_level=client,
            host_level=server,
            client_tspkg=ctx.client.tspkg_version,
            host_tspkg=ctx.host.tspkg_version,
            client_oracle=ctx.client.effective("encryption_oracle").describe(
                "AllowEncryptionOracle"
            ),
        )
    ]


PATCH = Fix(
    "install-update",
    f"Install the CredSSP update on the unpatched host ({UPDATE}).",
    {"host": (op("hotfix.install", kb=UPDATE),)},
    leaves=("host:hotfixes*", "host:tspkg_version", "host:computer/os_build"),
)
VULNERABLE_WORKAROUND = Fix(
    "oracle-vulnerable",
    "Set AllowEncryptionOracle=2 (Vulnerable) on the client so it talks to the unpatched host.",
    {"client": (reg_dword(win.CREDSSP_KEY, "AllowEncryptionOracle", win.ORACLE_VULNERABLE),)},
    risk="lowers-security",
)

FAULT = Fault(
    id=ID,
    title="CredSSP encryption oracle mismatch (unpatched encryption)",
    symptom=Symptom(
        "credssp",
        "An authentication error has occurred. The function requested is not supported."
        " ... This could be due to CredSSP encryption oracle remediation.",
        error_code=None,
        extended_code=None,
        code_source="KB 4295591: the client shows this authentication error dialog, not 0x904"
        " (the seed article counts the mismatch among 0x904 causes)",
    ),
    explanation=(
        "In 2018 Microsoft fixed a flaw in CredSSP, the protocol that carries your "
        "credentials during Network Level Authentication (CVE-2018-0886). Patched "
        "machines have a setting, AllowEncryptionOracle, that says whether they still "
        "talk to unpatched peers. Here the host never got the update (a Server 2016 "
        "image from before May 2018) and the client is set to 'Force Updated Clients', "
        "so the client refuses the host during NLA. The right fix is to patch the host. "
        "Setting the client to 'Vulnerable' also connects, but re-opens the hole, so "
        "rdplab only does that when a scenario explicitly opts in."
    ),
    placements=(
        Placement(
            "host",
            {
                "client": (
                    reg_dword(win.CREDSSP_KEY, "AllowEncryptionOracle", win.ORACLE_FORCE_UPDATED),
                )
            },
            (PATCH, VULNERABLE_WORKAROUND),
            leaves=("client:registry/*CredSSP\\Parameters/AllowEncryptionOracle/*",),
        ),
    ),
    detect=detect,
    sources=(
        "Microsoft support KB 4093492: CredSSP updates for CVE-2018-0886 (matrix)",
        "Microsoft support KB 4295591: CredSSP encryption oracle remediation error",
        "MSRC CVE-2018-0886",
    ),
    baselines={"host": "windows-server-2016-1607"},
)
