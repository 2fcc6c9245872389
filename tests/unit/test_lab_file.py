"""Lab files: the documented shape loads; every kind of bad input stops with an error
naming the file, the line and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rdplab.errors import LabFileError
from rdplab.lab import load_lab

REPO = Path(__file__).resolve().parents[2]
BASELINES = REPO / "fixtures" / "baselines"

GOOD = """\
machines:
  client: {baseline: windows-11}
  host: {baseline: windows-server-2022}
scenarios:
  - id: healthy
    faults: []
  - id: dns-and-cert
    faults: [dns-stale-record, {fault: firewall-websocket-blocked, on: client}]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str) -> object:
    return load_lab(write(tmp_path, text), baseline_dir=BASELINES)


def test_documented_shape_loads(tmp_path: Path) -> None:
    lab = load_lab(write(tmp_path, GOOD), baseline_dir=BASELINES)
    assert [s.id for s in lab.scenarios] == ["healthy", "dns-and-cert"]
    combo = lab.scenario("dns-and-cert")
    assert combo.expected() == {
        ("dns-stale-record", "client"),
        ("firewall-websocket-blocked", "client"),
    }
    assert combo.network.transport == "websocket"  # the WebSocket fault needs it


def test_repo_lab_file_loads() -> None:
    lab = load_lab(REPO / "labs" / "rdp-0x904.yaml")
    assert len(lab.scenarios) >= 1 + 11 + 6
    combos = [s for s in lab.scenarios if len({pf.placement.on for pf in s.faults}) > 1]
    assert len(combos) >= 6


def test_fault_baseline_is_inherited(tmp_path: Path) -> None:
    lab = load(tmp_path, GOOD.replace("faults: []", "faults: [credssp-oracle-mismatch]"))
    assert lab.scenarios[0].baselines["host"] == "windows-server-2016-1607"  # type: ignore[attr-defined]


BAD = [
    pytest.param(
        GOOD.replace("faults: []", "faults: [dns-stale-record"),
        7,
        "",
        "YAML syntax error",
        id="yaml-syntax",
    ),
    pytest.param(
        GOOD.replace("faults: []", "faults: [no-such-fault]"),
        6,
        "scenarios[0].faults[0]",
        "unknown fault id 'no-such-fault'",
        id="unknown-fault",
    ),
    pytest.param(
        GOOD.replace("{fault: firewall-websocket-blocked, on: client}", "{fault: nope, on: host}"),
        8,
        "scenarios[1].faults[1].fault",
        "unknown fault id 'nope'",
        id="unknown-fault-in-mapping",
    ),
    pytest.param(
        GOOD.replace(
            "  host: {baseline: windows-server-2022}", "  server: {baseline: windows-server-2022}"
        ),
        3,
        "machines.server",
        "unknown field",
        id="unknown-role-machine",
    ),
    pytest.param(
        GOOD.replace("on: client", "on: server"),
        8,
        "scenarios[1].faults[1].on",
        "'client', 'host' or 'router'",
        id="unknown-role-on",
    ),
    pytest.param(
        GOOD.replace("faults: [dns-stale-record, ", "faults: [{fault: rdp-disabled, on: client}, "),
        8,
        "scenarios[1].faults[0].on",
        "cannot be put on client",
        id="fault-wrong-role",
    ),
    pytest.param(
        GOOD.replace("    faults: []\n", ""),
        5,
        "scenarios[0].faults",
        "required field is missing",
        id="missing-field",
    ),
    pytest.param(
        GOOD.replace("  host: {baseline: windows-server-2022}\n", ""),
        1,
        "machines.host",
        "required field is missing",
        id="missing-machine",
    ),
    pytest.param(
        GOOD.replace("faults: []", "faults: dns-stale-record"),
        6,
        "scenarios[0].faults",
        "valid list",
        id="wrong-type-faults",
    ),
    pytest.param(
        GOOD.replace("faults: []", "faults: []\n    allow_lowers_security: yes"),
        7,
        "scenarios[0].allow_lowers_security",
        "valid boolean",
        id="wrong-type-bool",
    ),
    pytest.param(
        GOOD.replace("id: dns-and-cert", "id: healthy"),
        7,
        "scenarios[1].id",
        "duplicate scenario id",
        id="duplicate-id",
    ),
    pytest.param(
        GOOD.replace("on: client}", "on: client, variant: nope}"),
        8,
        "scenarios[1].faults[1].variant",
        "has no variant 'nope'",
        id="unknown-variant",
    ),
    pytest.param(
        GOOD.replace("baseline: windows-11", "baseline: windows-95"),
        2,
        "machines.client.baseline",
        "no baseline named 'windows-95'",
        id="unknown-baseline",
    ),
    pytest.param(
        GOOD.replace(
            "faults: []",
            "faults: [credssp-oracle-mismatch]\n    baselines: {host: windows-server-2022}",
        ),
        7,
        "scenarios[0].baselines.host",
        "needs host baseline 'windows-server-2016-1607'",
        id="baseline-conflict",
    ),
    pytest.param(
        GOOD.replace("id: dns-and-cert", "id: dns-and-cert\n    transport: tcp"),
        8,
        "scenarios[1].transport",
        "needs transport websocket",
        id="transport-conflict",
    ),
    pytest.param("- just\n- a list\n", 1, "", "must be a mapping", id="not-a-mapping"),
    pytest.param(
        GOOD.replace("id: healthy", "id: Healthy Scenario"),
        5,
        "scenarios[0].id",
        "pattern",
        id="bad-id",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "message"), BAD)
def test_bad_lab_file(tmp_path: Path, text: str, line: int, field: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(LabFileError) as info:
        load_lab(path, baseline_dir=BASELINES)
    err = info.value
    assert err.path == str(path)
    assert err.line == line, str(err)
    assert err.field == field, str(err)
    assert message in str(err)
    assert str(err).startswith(f"{path}:{line}")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LabFileError, match="file not found"):
        load_lab(tmp_path / "absent.yaml")
