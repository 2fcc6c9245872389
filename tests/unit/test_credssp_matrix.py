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
    """Standard RDP Security (SecurityLayer 0, client AuthenticationLevel not set by policy) skips
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


# KB 4295591, "How to verify that the CredSSP update is installed": every row of its
# tspkg.dll table, written out independently of windows.CREDSSP_FIXES.
KB4295591_TSPKG = {
    "Windows 7 SP1 / Server 2008 R2 SP1": "6.1.7601.24117",
    "Windows Server 2012": "6.2.9200.22432",
    "Windows 8.1 / Server 2012 R2": "6.3.9600.18999",
    "Windows 10 1607 / Server 2016": "10.0.14393.2248",
    "Windows 10 1703": "10.0.15063.1088",
    "Windows 10 1709": "10.0.16299.431",
}


def _neighbours(version: str) -> tuple[str, str, str]:
    """One revision below, the version itself, and a numerically (not lexically) larger
    one with more digits."""
    *family, rev = version.split(".")
    below = ".".join([*family, str(int(rev) - 1)])
    above = ".".join([*family, str(int(rev) * 10)])
    return below, version, above


def test_every_kb4295591_row_is_in_the_table() -> None:
    assert sorted(win.CREDSSP_FIXED_TSPKG.values()) == sorted(KB4295591_TSPKG.values())
    assert len(win.CREDSSP_FIXES) == 6


@pytest.mark.parametrize("os_name", list(KB4295591_TSPKG))
def test_credssp_patched_on_both_sides_of_each_kb4295591_threshold(os_name: str) -> None:
    below, exact, above = _neighbours(KB4295591_TSPKG[os_name])
    assert win.credssp_patched(below) is False, below
    assert win.credssp_patched(exact) is True, exact
    assert win.credssp_patched(above) is True, above
    assert win.credssp_patched(below.rsplit(".", 1)[0] + ".0") is False  # RTM of that family


@pytest.mark.parametrize("os_name", list(KB4295591_TSPKG))
def test_each_kb4295591_update_installs_on_its_family(
    os_name: str, make_twin: Callable[..., Twin], apply_ok: Callable[..., Any]
) -> None:
    """Every KB the article names is one the twin can install, and it lifts tspkg.dll to
    the article's version on that family (and only there)."""
    fixed = KB4295591_TSPKG[os_name]
    family = fixed.rsplit(".", 1)[0]
    row = next(f for f in win.CREDSSP_FIXES if f.tspkg == fixed)
    for kb in row.kbs:
        twin = make_twin("windows-server-2016-1607", "OLD")
        twin.tspkg_version = twin.computer.os_build = family + ".0"
        assert not win.credssp_patched(twin.tspkg_version)
        apply_ok(twin, [Op("hotfix.install", {"kb": kb})])
        assert twin.tspkg_version == fixed and win.credssp_patched(twin.tspkg_version)


@pytest.mark.parametrize(
    ("version", "patched"),
    [
        ("10.0.17133.9999", False),
        ("10.0.17134.0", True),  # Windows 10 1803 RTM: the assumed first build with the fix
        ("10.0.17134.1", True),
        ("10.0.17763.1", True),
        ("10.0.20348.2849", True),
        ("10.0.22631.4460", True),
        ("10.0.22631.1", True),
    ],
)
def test_builds_from_1803_on_are_assumed_patched(version: str, patched: bool) -> None:
    """ASSUMPTION (windows.CREDSSP_FIRST_FIXED_BUILD): no Microsoft page says 1803 ships
    the fix; KB 4295591's table ends at 1709 and the CVE-2018-0886 record lists no later
    release as affected."""
    assert win.credssp_patched(version) is patched


@pytest.mark.parametrize(
    "version",
    [
        "6.0.6002.24000",  # Windows Server 2008 SP2: affected, no row
        "10.0.10240.99999",  # Windows 10 1507: affected, no row
        "10.0.10586.99999",  # Windows 10 1511: affected, no row
    ],
)
def test_affected_families_without_a_kb4295591_row_are_judged_unpatched(version: str) -> None:
    """ASSUMPTION: KB 4295591 gives no tspkg.dll version for these families, so even a high
    revision cannot be shown to carry the fix."""
    assert win.credssp_fix_for(version) is None
    assert win.credssp_patched(version) is False
