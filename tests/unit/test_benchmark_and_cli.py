"""The benchmark script's output contract and the command line."""

from __future__ import annotations

import importlib.util
import json
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
    assert module.main(["--json", "--repeat", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scenarios"] == len(data["per_scenario"]) >= 18
    assert data["max_calls_per_machine_phase"] == 1
    assert isinstance(data["wall_s"], float)
    assert data["errors"] == []


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
