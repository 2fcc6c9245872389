"""Baselines: every shipped file loads and builds a healthy twin; invalid files stop with a
LabFileError naming the file (and line); an unknown name lists the known ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from rdplab import windows as win
from rdplab.baselines import BASELINE_DIR, build_twin, load_baseline
from rdplab.errors import LabFileError
from rdplab.facts import Facts
from rdplab.twin.certs import RD_STORE

SHIPPED = sorted(p.stem for p in BASELINE_DIR.glob("*.yaml"))
GOOD = (BASELINE_DIR / "windows-server-2022.yaml").read_text(encoding="utf-8")
# A small valid baseline for the invalid variants (YAML parsing is the slow part).
MINIMAL = """\
name: minimal
title: Minimal test baseline
os:
  caption: Test Server
  build: 10.0.20348.2849
  kind: server
registry:
  HKLM\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server\\WinStations\\RDP-Tcp:
    PortNumber: {type: REG_DWORD, data: 3389}
firewall:
  active_profile: Private
  profiles:
    Domain: {enabled: true, default_inbound: Block, default_outbound: Allow}
  rules:
    - {name: WINRM-HTTP-In-TCP, local_port: "5985", program: System, enabled: true}
services:
  TermService: {status: Running, start_type: Manual}
  WinRM: {status: Running, start_type: Automatic}
tspkg_version: 10.0.20348.2849
"""


def test_the_three_documented_baselines_ship() -> None:
    assert SHIPPED == ["windows-11", "windows-server-2016-1607", "windows-server-2022"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_baseline_loads_and_builds(name: str) -> None:
    base = load_baseline(name)
    assert base.name == name
    twin = build_twin(name, "M1")
    assert twin.computer.os_build == base.os.build
    assert twin.tspkg_version == base.tspkg_version
    # every machine of the lab is a healthy RDP endpoint
    assert twin.lookup(win.TS_KEY, "fDenyTSConnections") == 0
    assert twin.services.running("TermService")
    assert 3389 in twin.listening()
    assert twin.firewall.evaluate("In", "TCP", 3389, win.TS_PROGRAM).allowed
    desc, why = twin.tls_certificate()
    assert desc is not None and desc["subject"] == "CN=M1", why
    Facts.parse("m1", twin.gather())


def test_build_twin_gives_independent_copies() -> None:
    a = build_twin("windows-11", "A")
    b = build_twin("windows-11", "A")
    a.registry.set(win.TS_KEY, "fDenyTSConnections", "REG_DWORD", 1)
    a.firewall.rules.clear()
    a.services.stop("TermService")
    a.certs.corrupt_keys(RD_STORE)
    assert b.lookup(win.TS_KEY, "fDenyTSConnections") == 0
    assert b.firewall.rules
    assert b.services.running("TermService")
    assert b.tls_certificate()[0] is not None
    assert build_twin("windows-11", "A").snapshot() == b.snapshot()


def test_computer_name_is_per_twin() -> None:
    a, b = build_twin("windows-11", "ONE"), build_twin("windows-11", "TWO")
    assert (a.name, b.name) == ("ONE", "TWO")
    assert a.certs.facts()[RD_STORE][0]["subject"] == "CN=ONE"
    assert b.certs.facts()[RD_STORE][0]["subject"] == "CN=TWO"


def test_2016_baseline_is_unpatched_and_others_patched() -> None:
    assert not win.credssp_patched(load_baseline("windows-server-2016-1607").tspkg_version)
    assert win.credssp_patched(load_baseline("windows-server-2022").tspkg_version)
    assert win.credssp_patched(load_baseline("windows-11").tspkg_version)


def test_windows_11_ships_websocket_rules_disabled() -> None:
    ws = [r for r in build_twin("windows-11", "C").firewall.rules if r.group == win.RD_WS_GROUP]
    assert sorted(r.local_port[0] for r in ws) == ["3387", "3392"]
    assert not any(r.enabled for r in ws)


# -- invalid baselines ----------------------------------------------------------------------
def write_variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = MINIMAL.replace("name: minimal", f"name: {name}", 1)
    assert old in text, old
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def line_of(path: Path, fragment: str) -> int:
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if fragment in line:
            return i
    raise AssertionError(fragment)


def test_minimal_baseline_is_valid(tmp_path: Path) -> None:
    write_variant(tmp_path, "ok", "kind: server", "kind: server")
    base = load_baseline("ok", (tmp_path,))
    assert base.os.kind == "server" and base.firewall["active_profile"] == "Private"


@pytest.mark.parametrize(
    ("old", "new", "field", "message", "line_at"),
    [
        (
            "PortNumber: {type: REG_DWORD,",
            "PortNumber: {type: REG_DWORDX,",
            "registry",
            "unknown registry type 'REG_DWORDX'",
            "registry:",
        ),
        (
            "PortNumber: {type: REG_DWORD, data: 3389}",
            "PortNumber: {type: REG_DWORD, data: 4294967296}",
            "registry",
            "REG_DWORD needs an integer",
            "registry:",
        ),
        (
            'local_port: "5985",',
            'local_port: "5985", local_address: Any,',
            "firewall",
            "unknown field(s) ['local_address']",
            "firewall:",
        ),
        (
            "active_profile: Private",
            "active_profile: Work",
            "firewall",
            "active_profile",
            "firewall:",
        ),
        (
            "WinRM: {status: Running, start_type: Automatic}",
            "WinRM: {status: Running, start_type: Auto}",
            "services",
            "start_type must be one of",
            "services:",
        ),
        (
            "tspkg_version: 10.0.20348.2849",
            "tspkg_version: 10.0.20348.2849\nowner: someone",
            "owner",
            "unknown field",
            "owner:",
        ),
        ("kind: server", "kind: desktop", "os.kind", "", "kind:"),
        ("  build: 10.0.20348.2849", '  build: "10.0.20348"', "os.build", "pattern", "build:"),
    ],
)
def test_invalid_baseline_names_file_line_and_field(
    tmp_path: Path, old: str, new: str, field: str, message: str, line_at: str
) -> None:
    path = write_variant(tmp_path, "broken", old, new)
    with pytest.raises(LabFileError) as exc:
        load_baseline("broken", (tmp_path,))
    err = exc.value
    assert err.path == str(path)
    assert str(path) in str(err)
    assert err.field == field
    assert message in str(err)
    assert err.line == line_of(path, line_at)


def test_name_must_match_the_file(tmp_path: Path) -> None:
    text = MINIMAL.replace("name: minimal", "name: something-else", 1)
    (tmp_path / "mine.yaml").write_text(text)
    with pytest.raises(LabFileError, match="must be 'mine'") as exc:
        load_baseline("mine", (tmp_path,))
    assert exc.value.line == 1 and exc.value.field == "name"


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write_variant(tmp_path, "syntax", "kind: server", "kind: [server")
    with pytest.raises(LabFileError, match="YAML syntax error") as exc:
        load_baseline("syntax", (tmp_path,))
    assert exc.value.path == str(path) and exc.value.line is not None


def test_unknown_baseline_lists_known_ones() -> None:
    with pytest.raises(LabFileError) as exc:
        load_baseline("windows-xp")
    text = str(exc.value)
    assert "no baseline named 'windows-xp'" in text
    for name in SHIPPED:
        assert name in text


def test_unknown_baseline_lists_extra_dir_too(tmp_path: Path) -> None:
    write_variant(tmp_path, "custom", "kind: server", "kind: server")
    with pytest.raises(LabFileError) as exc:
        load_baseline("nope", (tmp_path, BASELINE_DIR))
    assert "custom" in str(exc.value) and "windows-11" in str(exc.value)
    assert load_baseline("custom", (tmp_path, BASELINE_DIR)).name == "custom"


def test_extra_dir_shadows_shipped_baseline(tmp_path: Path) -> None:
    (tmp_path / "windows-server-2022.yaml").write_text(
        GOOD.replace("caption: Microsoft Windows Server 2022 Datacenter", "caption: Custom", 1)
    )
    assert load_baseline("windows-server-2022", (tmp_path, BASELINE_DIR)).os.caption == "Custom"


# -- validation gaps (bugs) -----------------------------------------------------------------
def _load_broken(tmp_path: Path, old: str, new: str) -> None:
    path = write_variant(tmp_path, "gap", old, new)
    with pytest.raises(LabFileError) as exc:
        load_baseline("gap", (tmp_path,))
    assert exc.value.path == str(path)


def test_unknown_firewall_profile_field(tmp_path: Path) -> None:
    _load_broken(tmp_path, "Domain: {enabled: true,", "Domain: {enabld: true,")


def test_unknown_firewall_section_key(tmp_path: Path) -> None:
    _load_broken(tmp_path, "active_profile: Private", "active_profile: Private\n  rulez: []")


def test_bad_profile_default_action(tmp_path: Path) -> None:
    _load_broken(
        tmp_path,
        "Domain: {enabled: true, default_inbound: Block",
        "Domain: {enabled: true, default_inbound: Deny",
    )


def test_registry_value_without_type(tmp_path: Path) -> None:
    _load_broken(tmp_path, "PortNumber: {type: REG_DWORD, data: 3389}", "PortNumber: {data: 3389}")


def test_bad_service_status(tmp_path: Path) -> None:
    _load_broken(tmp_path, "TermService: {status: Running,", "TermService: {status: Runing,")


def test_bad_tspkg_version(tmp_path: Path) -> None:
    _load_broken(tmp_path, "tspkg_version: 10.0.20348.2849", "tspkg_version: latest")


@pytest.mark.parametrize("name", SHIPPED)
def test_nla_default_is_cited_and_unknown_defaults_are_marked_open(name: str) -> None:
    """UserAuthentication=1 rests on the ADMX explanation (NLA enforced by default since
    Windows Server 2012 / Windows 8); SecurityLayer and MinEncryptionLevel have no source
    for what a build ships, so their deviations say "open question" (sources.md s4)."""
    base = load_baseline(name)
    rdp_tcp = base.registry[win.RDP_TCP_KEY]
    assert rdp_tcp["UserAuthentication"]["data"] == 1
    assert any(
        "TS_USER_AUTHENTICATION_POLICY" in s and "Windows Server 2012 / Windows 8" in s
        for s in base.sources
    )
    shipped = {d.setting.rsplit("\\", 1)[-1]: d for d in base.deviations}
    for value in ("SecurityLayer", "MinEncryptionLevel"):
        dev = shipped[value]
        assert dev.setting == f"{win.RDP_TCP_KEY}\\{value}"
        assert dev.shipped.startswith("open question")
        assert dev.lab == str(rdp_tcp[value]["data"])
    assert "UserAuthentication" not in shipped  # documented: not a deviation
