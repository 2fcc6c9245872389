"""CredSSP (CVE-2018-0886): the KB 4093492 interoperability matrix, the detector and the
connection model on all 16 client/server combinations, and tspkg.dll version boundaries."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from rdplab import windows as win
from rdplab.catalog import credssp_oracle_mismatch as credssp
from rdplab.catalog.base import DetectContext
from rdplab.connection import connect
from rdplab.network import Network
from rdplab.ops import Op
from rdplab.twin import Twin

# KB 4093492, written out independently of the code (docs/rdp-0x904-reference.md s4):
# client row, server column; x = blocked.
LEVELS = ("not updated", "Force Updated Clients", "Mitigated", "Vulnerable")
PUBLISHED = """
                       not-updated  force  mitigated  vulnerable
not-updated            ok           x      ok         ok
force                  x            ok     ok         ok
mitigated              x            ok     ok         ok
vulnerable             ok           ok     ok         ok
"""


def published() -> dict[tuple[str, str], bool]:
    rows = [line.split() for line in PUBLISHED.strip().splitlines()[1:]]
    assert len(rows) == 4 and all(len(r) == 5 for r in rows)
    return {
        (LEVELS[i], LEVELS[j]): cell == "ok"
        for i, row in enumerate(rows)
        for j, cell in enumerate(row[1:])
    }


CELLS = list(itertools.product(LEVELS, LEVELS))
ORACLE_VALUE = {"Force Updated Clients": 0, "Mitigated": 1, "Vulnerable": 2}
UNPATCHED = "10.0.14393.2247"  # one build short of KB4103723
PATCHED = {"client": "10.0.22631.4460", "host": "10.0.20348.2849"}


def test_published_table_has_exactly_three_blocked_cells() -> None:
    blocked = {k for k, v in published().items() if not v}
    assert blocked == {
        ("not updated", "Force Updated Clients"),
        ("Force Updated Clients", "not updated"),
        ("Mitigated", "not updated"),
    }


def test_level_names_match_the_code() -> None:
    assert (credssp.NOT_UPDATED, credssp.FORCE, credssp.MITIGATED, credssp.VULNERABLE) == LEVELS
    assert win.ORACLE_NAMES == {0: "Force Updated Clients", 1: "Mitigated", 2: "Vulnerable"}


def test_matrix_has_all_16_cells() -> None:
    assert set(credssp.MATRIX) == set(CELLS)


@pytest.mark.parametrize(("client", "server"), CELLS)
def test_matrix_cell_matches_kb4093492(client: str, server: str) -> None:
    assert credssp.MATRIX[(client, server)] is published()[(client, server)]
    assert credssp.allowed(client, server) is published()[(client, server)]


def _set_level(twin: Twin, role: str, level: str, apply_ok: Callable[..., Any]) -> None:
    if level == "not updated":
        twin.tspkg_version = UNPATCHED
        # the policy value must not matter on an unpatched machine
        value = 0
    else:
        twin.tspkg_version = PATCHED[role]
        value = ORACLE_VALUE[level]
    apply_ok(
        twin,
        [
            Op(
                "reg.set",
                {
                    "key": win.CREDSSP_KEY,
                    "name": "AllowEncryptionOracle",
                    "type": "REG_DWORD",
                    "data": value,
                },
            )
        ],
    )


@pytest.mark.parametrize(("client_level", "host_level"), CELLS)
def test_detector_and_connection_on_twins(
    client_level: str,
    host_level: str,
    client: Twin,
    host: Twin,
    apply_ok: Callable[..., Any],
    contextualize: Callable[..., DetectContext],
    net: Network,
) -> None:
    _set_level(client, "client", client_level, apply_ok)
    _set_level(host, "host", host_level, apply_ok)
    ctx = contextualize(client, host)
    assert credssp.level(ctx.client) == client_level
    assert credssp.level(ctx.host) == host_level

    findings = credssp.detect(ctx)
    expect_ok = published()[(client_level, host_level)]
    if expect_ok:
        assert findings == []
    else:
        (f,) = findings
        assert f.fault == credssp.ID and f.role == "host"
        assert f.evidence["client_level"] == client_level
        assert f.evidence["host_level"] == host_level
        assert f.evidence["host_tspkg"] == host.tspkg_version

    result = connect(client, host, net)
    assert result.ok is expect_ok, result.evidence
    if not expect_ok:
        assert result.failed_stage == "credssp"
        assert f"'{client_level}'" in result.evidence and f"'{host_level}'" in result.evidence


def test_not_configured_oracle_behaves_as_mitigated(
    client: Twin, host: Twin, contextualize: Callable[..., DetectContext]
) -> None:
    host.tspkg_version = UNPATCHED
    ctx = contextualize(client, host)
    assert ctx.client.value(win.CREDSSP_KEY, "AllowEncryptionOracle") is None
    assert credssp.level(ctx.client) == "Mitigated"
    assert [f.fault for f in credssp.detect(ctx)] == [credssp.ID]


def test_installing_the_update_on_the_host_resolves_the_mismatch(
    make_twin: Callable[..., Twin],
    client: Twin,
    apply_ok: Callable[..., Any],
    contextualize: Callable[..., DetectContext],
    net: Network,
) -> None:
    old = make_twin("windows-server-2016-1607", "OLD")
    assert credssp.detect(contextualize(client, old))
    assert connect(client, old, net).failed_stage == "credssp"
    apply_ok(old, [Op("hotfix.install", {"kb": credssp.UPDATE})])
    assert credssp.detect(contextualize(client, old)) == []
    assert connect(client, old, net).ok


def test_credssp_not_consulted_without_nla_protocol(
    client: Twin, host: Twin, apply_ok: Callable[..., Any], net: Network
) -> None:
    """Standard RDP Security (SecurityLayer 0, client AuthenticationLevel 2: warn) skips
    CredSSP."""
    host.tspkg_version = UNPATCHED
    apply_ok(
        host,
        [
            Op(
                "reg.set",
                {"key": win.TS_POLICY_KEY, "name": "SecurityLayer", "type": "REG_DWORD", "data": 0},
            )
        ],
    )
    result = connect(client, host, net)
    assert result.ok
    assert "credssp" not in [s.name for s in result.stages]


@pytest.mark.parametrize(
    ("version", "patched"),
    [
        ("10.0.14393.0", False),
        ("10.0.14393.2247", False),
        ("10.0.14393.2248", True),
        ("10.0.14393.10000", True),  # numeric, not lexical, comparison
        ("6.3.9600.18998", False),
        ("6.3.9600.18999", True),
        ("6.3.9600.19000", True),
        ("6.1.7601.24116", False),
        ("6.1.7601.24117", True),
        ("10.0.17133.9999", False),
        ("10.0.17134.0", True),
        ("10.0.17134.1", True),
        ("10.0.17763.1", True),
        ("10.0.20348.2849", True),
        ("10.0.22631.4460", True),
        ("10.0.22631.1", True),
    ],
)
def test_credssp_patched_version_boundaries(version: str, patched: bool) -> None:
    assert win.credssp_patched(version) is patched
