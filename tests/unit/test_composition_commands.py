"""The commands meet composed faults the way the lab suite does: ``rdplab diagnose`` on
every scenario of the lab file (in file order and with its faults reversed) never stops
at the break step and names what is hidden; exercises with up to three faults never stop
at a break or fix step, for 50 seeds."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_composition import assert_composes

from rdplab.exercise.pick import draw, lab_digest
from rdplab.lab import load_lab
from rdplab.providers.sim import SimProvider
from rdplab.scenario import BREAK, DIAGNOSE, run_scenario

ROOT = Path(__file__).resolve().parents[2]
LAB_FILE = ROOT / "labs" / "rdp-0x904.yaml"
LAB = load_lab(LAB_FILE)


def rdplab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rdplab", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize("reverse", [False, True], ids=["file-order", "reversed"])
def test_diagnose_steps_never_stop_on_any_lab_scenario(reverse: bool) -> None:
    """What ``rdplab diagnose --lab-file labs/rdp-0x904.yaml --scenario ID`` runs (BREAK,
    then DIAGNOSE), for every scenario: no step stops, the findings are what is expected."""
    for sc in LAB.scenarios:
        if reverse:
            sc = dataclasses.replace(sc, faults=tuple(reversed(sc.faults)))
        run = run_scenario(SimProvider(), sc, BREAK + DIAGNOSE)
        assert run.error is None, f"{sc.id}: stopped at {run.failed_step}: {run.error}"
        assert {(f.fault, f.role) for f in run.findings} == sc.expected(), sc.id


def test_diagnose_names_what_is_hidden_and_by_what() -> None:
    """The user's command, as a subprocess: three faults, two hidden from the connection
    by the moved listener, each named with what hides it (text and --json)."""
    args = ("diagnose", "--lab-file", str(LAB_FILE), "--scenario", "port-and-cert-and-licensing")
    text = rdplab(*args)
    assert text.returncode == 1, text.stderr
    assert "Hidden" in text.stdout
    assert (
        "licensing-cache-stale@client is hidden from the connection by"
        " listener-port-changed@host" in text.stdout
    )
    doc = json.loads(rdplab(*args, "--json").stdout)
    hidden = {h["fault"]: h for h in doc["hidden"]}
    assert set(hidden) == {"licensing-cache-stale@client", "rdp-cert-corrupt@host"}
    assert hidden["rdp-cert-corrupt@host"]["by"] == ["listener-port-changed@host"]
    assert "never reaches tls" in hidden["rdp-cert-corrupt@host"]["reason"]
    healthy = json.loads(
        rdplab("diagnose", "--lab-file", str(LAB_FILE), "--scenario", "healthy", "--json").stdout
    )
    assert healthy["hidden"] == []


def test_fifty_exercise_seeds_with_three_faults_break_and_fix() -> None:
    """``rdplab exercise new --faults 3`` for seeds 1..50: the draw never meets a break
    that stops (it would raise), and the drawn causes go through the whole lifecycle."""
    digest = lab_digest(LAB_FILE)
    sizes = set()
    for seed in range(1, 51):
        scenario, causes, _ = draw(LAB, seed, 3, digest)
        sizes.add(len(causes))
        assert_composes(run_scenario(SimProvider(), scenario))
    assert 3 in sizes


def test_exercise_new_with_three_faults_as_a_user_runs_it(tmp_path: Path) -> None:
    for seed in (7, 8, 9):
        state = tmp_path / f"ex{seed}.json"
        done = rdplab(
            "exercise", "new", "--seed", str(seed), "--faults", "3", "--json", "--reveal",
            "--state", str(state), "--lab-file", str(LAB_FILE),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert 1 <= len(doc["answer"]["causes"]) <= 3
