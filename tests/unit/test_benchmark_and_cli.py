"""The benchmark script's output contract and the command line."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rdplab.catalog import catalog
from rdplab.cli import app

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_json(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "lab_matrix", REPO / "benchmarks" / "lab_matrix.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--json", "--repeat", "1", "--workers", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scenarios"] == len(data["per_scenario"]) >= 18
    assert data["max_calls_per_machine_phase"] == 1
    assert isinstance(data["wall_s"], float)
    assert data["errors"] == []
    # the sim rebuilds every twin for every scenario: two restores each
    assert data["restores"] == 2 * data["scenarios"] and data["always_restore"] is True
    assert data["workers"] == 1 and data["parallel_wall_s"] is None


SMALL_LAB = """\
machines:
  client: {baseline: windows-11}
  host: {baseline: windows-server-2022}
scenarios:
  - {id: healthy, faults: []}
  - {id: rdp-disabled, faults: [rdp-disabled]}
  - {id: dns, faults: [dns-stale-record]}
"""


def test_benchmark_parallel_fields(tmp_path: Path) -> None:
    """``--workers 2``: the matrix split over two worker processes, each its own lab,
    covering every scenario once; parallel_wall_s beside the serial wall_s."""
    lab = tmp_path / "labs" / "small.yaml"
    lab.parent.mkdir()
    lab.write_text(SMALL_LAB)
    proc = subprocess.run(
        [
            *(sys.executable, str(REPO / "benchmarks" / "lab_matrix.py")),
            *("--json", "--repeat", "1", "--workers", "2", "--lab-file", str(lab)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["workers"] == 2 and data["scenarios"] == 3
    assert isinstance(data["parallel_wall_s"], float) and data["parallel_wall_s"] > 0
    assert len(data["parallel_worker_wall_s"]) == 2
    assert data["restores_parallel"] == data["restores"] == 6
    assert data["errors"] == []
    assert [p["restored"] for p in data["per_scenario"]] == [["client", "host"]] * 3


def test_list_json_is_the_catalog() -> None:
    result = CliRunner().invoke(app, ["list", "--json"])
    assert result.exit_code == 0
    faults = json.loads(result.stdout)
    assert [f["id"] for f in faults] == list(catalog())
    required = {"id", "title", "roles", "symptom", "risk", "break", "fix", "sources"}
    for f in faults:
        assert required <= set(f), f["id"]
        assert {"error_code", "extended_code", "stage"} <= set(f["symptom"])
        assert f["risk"] in ("safe", "lowers-security")
        assert f["fix"] and all({"op", "args"} <= set(o) for o in f["fix"])
        assert f["sources"]
    by_id = {f["id"]: f for f in faults}
    port_fix = by_id["listener-port-changed"]["fix"][0]
    assert port_fix["op"] == "reg.set"
    assert port_fix["args"]["name"] == "PortNumber"
    assert port_fix["args"]["key"].endswith(r"WinStations\RDP-Tcp")
    risks = {fx["risk"] for fx in by_id["credssp-oracle-mismatch"]["fixes"]}
    assert risks == {"safe", "lowers-security"}


def test_list_table_and_explain() -> None:
    runner = CliRunner(env={"COLUMNS": "160"})
    table = runner.invoke(app, ["list"]).stdout
    for fault_id in catalog():  # whole ids, even on a narrow terminal
        assert fault_id in table
    result = runner.invoke(app, ["explain", "rdp-cert-corrupt"])
    assert result.exit_code == 0
    assert "MachineKeys" in result.stdout
    assert "cert.remove" in result.stdout


def test_explain_unknown_fault() -> None:
    result = CliRunner().invoke(app, ["explain", "no-such-fault"])
    assert result.exit_code == 2
    assert "unknown fault id 'no-such-fault'" in result.stderr


def test_run_selected_scenarios_json() -> None:
    result = CliRunner().invoke(app, ["run", "--json", "-s", "healthy", "-s", "rdp-disabled"])
    assert result.exit_code == 0, result.stdout
    rows = json.loads(result.stdout)
    assert [(r["scenario"], r["ok"]) for r in rows] == [("healthy", True), ("rdp-disabled", True)]


def test_run_bad_lab_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("machines: [\n")
    result = CliRunner().invoke(app, ["run", "--lab-file", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:" in result.stderr


def test_train_walks_through_a_fault() -> None:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["train", "listener-port-changed"])
    assert result.exit_code == 0, result.stdout
    text = result.stdout
    assert "reg.set" in text  # the break
    assert "refused" in text  # what the user sees
    assert "RDP-Tcp listens on 3390, clients dial 3389" in text  # detection evidence
    assert "findings after the fix: 0" in text
    assert "running the fix again changes: 0" in text


def test_train_unknown_fault() -> None:
    result = CliRunner().invoke(app, ["train", "nope"])
    assert result.exit_code == 2
    assert "unknown fault id 'nope'" in result.stderr


def test_suite_cost_benchmark_output() -> None:
    """benchmarks/suite_cost.py: the sim lab suite beside as many empty tests (one run
    each); the ratio is measured, not asserted (timing on a shared runner), and is in the
    report and docs/scale.md."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "suite_cost.py"), "--repeat", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["tests"] >= 150
    for key in ("lab_wall_s", "empty_wall_s", "lab_cpu_s", "empty_cpu_s"):
        assert data[key] > 0, key
    assert data["cpu_ratio"] == round(data["lab_cpu_s"] / data["empty_cpu_s"], 2)
