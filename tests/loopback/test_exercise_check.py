"""``rdplab exercise new`` and ``check`` on a real lab, as far as this machine allows: the
inventory provider over real pywinrm (NTLM) to the loopback WS-Management responders and
the live probe against the loopback RDP responder (tests/loopback/test_provider_inventory.py
builds them). The trainee's repair "by hand" is made on the twins behind the responders,
as someone at the machine would make it, not through rdplab. No Windows ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rdplab.catalog.base import reg_dword
from rdplab.exercise import pick
from rdplab.exercise.grade import fixes_of
from rdplab.lab import load_lab
from rdplab.ops import render_op

from .test_provider_inventory import REPO, WinRMLab, make_winrm_lab

LAB_FILE = REPO / "labs" / "rdp-0x904.yaml"


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WinRMLab]:
    """Client and host: loopback WinRM responders with twins; the host's RDP listener: the
    loopback RDP responder following the host twin (test_provider_inventory.py)."""
    with make_winrm_lab(tmp_path, monkeypatch) as built:
        yield built


def seed_for(fault: str) -> tuple[int, pick.Cause]:
    """The first seed whose one-fault exercise is ``fault`` (found, not hard-coded)."""
    lab, digest = load_lab(LAB_FILE), pick.lab_digest(LAB_FILE)
    for seed in range(200):
        _, causes, _ = pick.draw(lab, seed, 1, digest)
        if [c.fault for c in causes] == [fault]:
            return seed, causes[0]
    raise AssertionError(f"no seed gives {fault}")


def exercise(lab: WinRMLab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rdplab", "exercise", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, COLUMNS="200"),  # the password variables the inventory names
    )


def by_hand(lab: WinRMLab, cause: pick.Cause, risk: str) -> None:
    """Apply the cause's fix of that risk on the machines' own state (as a trainee at the
    keyboard would), not through rdplab."""
    fix = next(f for f in fixes_of(cause) if f.risk == risk)
    ctx = load_lab(LAB_FILE).scenarios[0].network.context()
    for role, ops in fix.ops.items():
        result = lab.responders()[role].twin.apply([render_op(o, ctx) for o in ops])
        assert not result.errors, result.errors


def check(lab: WinRMLab, state: Path) -> dict[str, Any]:
    r = exercise(lab, "check", "--state", str(state), "--json", "--trainee", "ana")
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def new(lab: WinRMLab, seed: int, state: Path) -> dict[str, Any]:
    r = exercise(
        lab,
        "new",
        f"--inventory={lab.inventory}",
        f"--lab-file={LAB_FILE}",
        f"--seed={seed}",
        "--faults=1",
        f"--state={state}",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


@pytest.mark.winrm_loopback
def test_check_grades_a_repair_made_by_hand(lab: WinRMLab, tmp_path: Path) -> None:
    seed, cause = seed_for("termservice-stopped")
    state = tmp_path / "exercise.json"
    made = new(lab, seed, state)
    assert made["provider"] == "inventory"
    assert made["symptom"]["error_code"] == "0x904"  # refused by the loopback listener
    assert lab.host.twin.services.get("TermService").status == "Stopped"
    looked = exercise(lab, "inspect", "host", "services", "--state", str(state))
    assert looked.returncode == 2 and "look on the machine itself" in looked.stderr

    before = check(lab, state)
    assert before["causes"] == [{"fault": cause.fault, "role": "host", "verdict": "still-broken"}]
    assert before["connection"]["ok"] is False
    assert before["score"] < 1.0

    by_hand(lab, cause, "safe")
    after = check(lab, state)
    assert after["causes"][0]["verdict"] == "repaired"
    assert after["connection"]["ok"] is True, after["connection"]
    assert after["unexpected_changes"] == {} and after["security_lowered"] == []
    assert after["score"] == 1.0
    assert json.loads((tmp_path / "check.json").read_text())["trainee"] == "ana"


@pytest.mark.winrm_loopback
def test_check_sees_security_lowered_and_changes_beyond_the_fixes(
    lab: WinRMLab, tmp_path: Path
) -> None:
    seed, cause = seed_for("cert-revocation-unreachable")
    state = tmp_path / "exercise.json"
    new(lab, seed, state)
    by_hand(lab, cause, "lowers-security")  # the revocation check turned off
    # and a change no fix of this cause makes
    changed = lab.host.twin.apply(
        [
            render_op(op, {})
            for op in [
                reg_dword(
                    r"HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server",
                    "fSingleSessionPerUser",
                    0,
                )
            ]
        ]
    )
    assert not changed.errors
    graded = check(lab, state)
    assert graded["connection"]["ok"] is True  # it connects: the check is off
    assert graded["causes"][0]["verdict"] == "repaired"  # the detector is quiet
    lowered = graded["security_lowered"]  # the judge reads the state, not the label
    assert [(w["role"], w["setting"]) for w in lowered] == [("client", "AllowCertRevocationCheck")]
    host_changes = [c["setting"] for c in graded["unexpected_changes"].get("host", [])]
    assert any("fSingleSessionPerUser" in s for s in host_changes), graded["unexpected_changes"]
    assert graded["score"] == 0.75
