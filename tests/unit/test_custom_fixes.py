"""A lab file's own fixes (labs/custom-fixes.yaml) held to every aspect of tests/test_lab.py,
in ONE run of the lab suite as a user runs it (pytest in a subprocess, JUnit XML read back).

Each done-when case of issue 8 is a test of its own: the correct fix passes every aspect,
the incomplete one fails test_fix with the evidence, the one that weakens the client fails
test_lowers_security_needs_opt_in unless the scenario opts in, the one that touches an
unrelated watched value fails test_no_collateral, and the script fix is skipped on sim
(the one skip allowed there) with the reason.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "labs" / "custom-fixes.yaml"
ASPECTS = (
    "test_detect",
    "test_symptom",
    "test_fix",
    "test_idempotent",
    "test_no_collateral",
    "test_lowers_security_needs_opt_in",
    "test_call_budget",
)


@dataclass
class Outcome:
    status: str  # passed | failed | skipped
    text: str


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Outcome]:
    xml = tmp_path_factory.mktemp("junit") / "lab.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_lab.py",
            f"--lab-file={LAB}",
            f"--junitxml={xml}",
            f"--html={xml.with_name('lab.html')}",
            "--self-contained-html",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # some fail on purpose
    out: dict[tuple[str, str], Outcome] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name, _, scenario = case.get("name", "").partition("[")
        status, text = "passed", ""
        for kind in ("failure", "error", "skipped"):
            el = case.find(kind)
            if el is not None:
                status = "skipped" if kind == "skipped" else "failed"
                text = (el.get("message") or "") + "\n" + (el.text or "")
        out[(name, scenario.rstrip("]"))] = Outcome(status, text)
    return out


def _failed(outcomes: dict[tuple[str, str], Outcome], scenario: str) -> set[str]:
    return {a for a in ASPECTS if outcomes[(a, scenario)].status == "failed"}


def test_correct_custom_fix_passes_every_aspect(outcomes: dict[tuple[str, str], Outcome]) -> None:
    assert {a: outcomes[(a, "my-rdp-fix")].status for a in ASPECTS} == dict.fromkeys(
        ASPECTS, "passed"
    )


def test_incomplete_custom_fix_fails_test_fix_with_evidence(
    outcomes: dict[tuple[str, str], Outcome],
) -> None:
    assert "test_fix" in _failed(outcomes, "my-rdp-fix-incomplete")
    text = outcomes[("test_fix", "my-rdp-fix-incomplete")].text
    assert "fDenyTSConnections=1 (policy)" in text  # the finding's evidence: the policy wins
    assert outcomes[("test_detect", "my-rdp-fix-incomplete")].status == "passed"


def test_custom_fix_lowering_security_fails_without_opt_in(
    outcomes: dict[tuple[str, str], Outcome],
) -> None:
    assert _failed(outcomes, "my-connect-anyway-lowers-security") == {
        "test_lowers_security_needs_opt_in"
    }
    text = outcomes[("test_lowers_security_needs_opt_in", "my-connect-anyway-lowers-security")].text
    assert "client: AuthenticationLevel 3 (no requirement specified) [rdp-file default]" in text
    assert "-> 0 (always connect) [policy]" in text
    assert "IMsRdpClientAdvancedSettings4::AuthenticationLevel" in text  # its source
    assert _failed(outcomes, "my-connect-anyway-opted-in") == set()


def test_custom_fix_with_collateral_fails_test_no_collateral(
    outcomes: dict[tuple[str, str], Outcome],
) -> None:
    assert _failed(outcomes, "my-rdp-fix-collateral") == {"test_no_collateral"}
    assert "fSingleSessionPerUser" in outcomes[("test_no_collateral", "my-rdp-fix-collateral")].text


def test_custom_fix_narrowing_firewall_remote_addresses_is_no_weakening(
    outcomes: dict[tuple[str, str], Outcome],
) -> None:
    """A fix that keeps Remote Desktop to LocalSubnet (the baseline: Any) passes every aspect:
    the judge sees a narrower scope, and the client on the host's subnet still connects."""
    assert {a: outcomes[(a, "my-firewall-fix-lan-only")].status for a in ASPECTS} == dict.fromkeys(
        ASPECTS, "passed"
    )


def test_custom_fix_scoped_away_from_the_client_fails_test_fix(
    outcomes: dict[tuple[str, str], Outcome],
) -> None:
    """Scoped to 10.0.0.0/8, the rule no longer admits the client (192.168.56.10): the
    detector still finds the fault after the fix and names the scope that leaves it out."""
    assert _failed(outcomes, "my-firewall-fix-wrong-subnet-incomplete") == {"test_fix"}
    text = outcomes[("test_fix", "my-firewall-fix-wrong-subnet-incomplete")].text
    assert "still found after the fix" in text
    assert "for the client 192.168.56.10: its rule scope leaves it out" in text


def test_script_fix_is_skipped_on_sim_with_the_reason(
    outcomes: dict[tuple[str, str], Outcome],
) -> None:
    needs_fix = ("test_fix", "test_idempotent", "test_no_collateral")
    for aspect in (*needs_fix, "test_lowers_security_needs_opt_in"):
        got = outcomes[(aspect, "my-script-fix")]
        assert got.status == "skipped", aspect
        assert "PowerShell script (enable-rdp.ps1)" in got.text and "sim" in got.text
    for aspect in ("test_detect", "test_symptom", "test_call_budget"):
        assert outcomes[(aspect, "my-script-fix")].status == "passed", aspect
    skipped = [k for k, o in outcomes.items() if o.status == "skipped"]
    assert {scenario for _, scenario in skipped} == {"my-script-fix"}  # the only sim skip


def test_report_says_the_fix_came_from_the_lab_file(
    outcomes: dict[tuple[str, str], Outcome], tmp_path_factory: pytest.TempPathFactory
) -> None:
    raw = next(tmp_path_factory.getbasetemp().glob("junit*/lab.html")).read_text()
    report = html.unescape(html.unescape(raw))  # pytest-html keeps the rows as escaped JSON
    assert f"fix: from the lab file</b> ({LAB}:" in report
    assert "WEAKENED (NOT opted in): client: AuthenticationLevel" in report


def test_rdplab_run_applies_the_judge_and_the_skip() -> None:
    """``rdplab run`` (the sim runner) holds custom fixes to the same checks."""
    proc = subprocess.run(
        [sys.executable, "-m", "rdplab", "run", "--lab-file", str(LAB), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1  # the wrong-on-purpose scenarios fail
    rows = {r["scenario"]: r for r in json.loads(proc.stdout)}
    assert {s for s, r in rows.items() if not r["ok"]} == {
        "my-rdp-fix-incomplete",
        "my-connect-anyway-lowers-security",
        "my-rdp-fix-collateral",
        "my-firewall-fix-wrong-subnet-incomplete",
    }
    assert rows["my-firewall-fix-lan-only"]["weakened"] == []
    assert [w["setting"] for w in rows["my-connect-anyway-opted-in"]["weakened"]] == [
        "AuthenticationLevel",
        "SecurityLayer",
    ]
    assert "runs no PowerShell" in rows["my-script-fix"]["skipped"]
    assert rows["my-rdp-fix"]["fix_origin"].startswith(f"{LAB}:")
