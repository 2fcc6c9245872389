"""``rdplab exercise`` as a user runs it: the installed entry point in a subprocess, over a
handful of seeds (tests/unit/test_exercise.py runs the 50-seed check in-process through
the same Typer app, since each subprocess pays ~0.5 s of start-up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rdplab import catalog as cat

REPO = Path(__file__).resolve().parents[2]
SEEDS = (0, 1)


def rdplab(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rdplab", "exercise", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_new_reveal_then_answer_scores_one(seed: int, tmp_path: Path) -> None:
    st = str(tmp_path / "ex.json")
    new = rdplab("new", "--seed", str(seed), "--faults", "3", "--state", st, "--json", "--reveal")
    assert new.returncode == 0, new.stderr
    data = json.loads(new.stdout)
    assert data["exercise"].startswith("ex-") and data["symptom"]["machines"]
    answer = data["answer"]
    causes = [f"{c['fault']}@{c['role']}" for c in answer["causes"]]
    fixes = [x for f in answer["fixes"] for x in ("--fix", f)]
    graded = rdplab("answer", *causes, *fixes, "--state", st, "--json")
    assert graded.returncode == 0, graded.stderr
    result = json.loads(graded.stdout)
    assert result["score"] == 1.0
    assert {c["verdict"] for c in result["causes"]} == {"found"}
    assert json.loads((tmp_path / "answer.json").read_text())["score"] == 1.0
    if seed == SEEDS[0]:
        empty = rdplab("answer", "--state", st, "--json")
        assert json.loads(empty.stdout)["score"] == 0.0
        assert all("hint" in c for c in json.loads(empty.stdout)["causes"])


def test_new_inspect_and_mistakes(tmp_path: Path) -> None:
    st = str(tmp_path / "ex.json")
    none = rdplab("answer", "rdp-disabled", "--state", st)
    assert none.returncode == 2
    assert none.stderr.strip().startswith("error:") and "no exercise here" in none.stderr
    assert "Traceback" not in none.stderr
    new = rdplab("new", "--seed", "5", "--state", st)
    assert new.returncode == 0, new.stderr
    assert "0x904" in new.stdout or "authentication error" in new.stdout
    for fault in cat.catalog():  # new without --reveal prints no fault id
        assert fault not in new.stdout + new.stderr
    svc = rdplab("inspect", "host", "services", "--state", st)
    assert svc.returncode == 0, svc.stderr
    assert svc.stdout.startswith("PS C:\\> Get-Service")
    assert "TermService" in svc.stdout
    missing = rdplab("inspect", "host", "registry", r"HKLM\SOFTWARE\Nope", "--state", st)
    assert missing.returncode == 1  # as reg.exe exits
    assert "ERROR: The system was unable to find the specified registry key" in missing.stdout
    typo = rdplab("answer", "rdp-disbled", "--state", st)
    assert typo.returncode == 2 and "did you mean 'rdp-disabled'" in typo.stderr
    assert len(typo.stderr.strip().splitlines()) == 1 and "Traceback" not in typo.stderr
    check = rdplab("check", "--state", st)
    assert check.returncode == 2 and "exercise answer" in check.stderr  # sim: use answer


def test_report_writes_one_page_and_a_csv(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rdplab.cli import app

    st = str(tmp_path / "ex.json")
    folder = tmp_path / "class"
    runner = CliRunner()
    assert runner.invoke(app, ["exercise", "new", "--seed", "9", "--state", st]).exit_code == 0
    for who in ("ana", "ben"):
        args = [
            "rdp-disabled",
            "--state",
            st,
            "--trainee",
            who,
            "--out",
            str(folder / f"{who}.json"),
        ]
        assert runner.invoke(app, ["exercise", "answer", *args]).exit_code == 0
    rep = rdplab("report", str(folder))
    assert rep.returncode == 0, rep.stderr
    assert "2 result(s)" in rep.stdout
    assert (folder / "exercise-report.html").read_text().count("<tr data-exercise=") == 2
    assert len((folder / "exercise-report.csv").read_text().strip().splitlines()) == 3
