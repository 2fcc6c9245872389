"""The lifecycle is data: STEPS is what runs, commands compose the same steps, and a
fault's gather needs come from its own module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rdplab import catalog as cat
from rdplab import scenario as sc
from rdplab.lab import load_lab
from rdplab.providers import get_provider

REPO = Path(__file__).resolve().parents[2]
LAB = load_lab(REPO / "labs" / "rdp-0x904.yaml")


def test_steps_is_what_runs() -> None:
    run = sc.run_scenario(get_provider("sim"), LAB.scenario("rdp-disabled"))
    assert run.error is None
    assert run.steps == [s.name for s in sc.STEPS]


def test_a_step_sequence_can_be_cut_short() -> None:
    """A command composes a subset: break then diagnose, and nothing is fixed."""
    run = sc.run_steps(
        sc.new_run(get_provider("sim"), LAB.scenario("rdp-disabled")), sc.BREAK + sc.DIAGNOSE
    )
    assert run.steps == ["reset", "break", "gather", "detect", "connect"]
    assert [(f.fault, f.role) for f in run.findings] == [("rdp-disabled", "host")]
    assert run.connection is not None and not run.connection.ok
    assert run.fix_results == {} and run.findings_after == []
    # each remote step counted once per machine under its own phase
    assert run.calls == {"host/break": 1, "client/gather": 1, "host/gather": 1}


def test_a_failing_step_is_recorded_and_ends_the_run() -> None:
    run = sc.run_steps(sc.new_run(get_provider("sim"), LAB.scenario("healthy")), sc.DIAGNOSE)
    assert run.failed_step == "gather"
    assert run.error is not None and "reset" in run.error
    assert run.steps == []


def test_gather_needs_come_from_the_faults() -> None:
    """The client probes the CRL locations of the host's certificates because the
    revocation fault says so; the generic runner knows no fault by name."""
    run = sc.run_steps(
        sc.new_run(get_provider("sim"), LAB.scenario("cert-revocation-unreachable")),
        sc.BREAK,
    )
    host = run.lab.host.gather()
    args = sc.gather_args("client", LAB.scenario("healthy").network, {"host": host})
    assert args["probe_urls"] and all(u.startswith("http") for u in args["probe_urls"])
    assert "probe_urls" not in sc.gather_args("host", LAB.scenario("healthy").network, {})
    text = (REPO / "src" / "rdplab" / "scenario.py").read_text()
    assert not any(f.replace("-", "_") in text for f in cat.catalog())


def test_unknown_fault_suggests_the_closest_id() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rdplab", "explain", "rdp-disable"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "did you mean 'rdp-disabled'?" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
