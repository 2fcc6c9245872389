"""The pytest plugin, tested with pytester: options, parametrization, reports, errors."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

LAB = """\
machines:
  client: {baseline: windows-11}
  host: {baseline: windows-server-2022}
scenarios:
  - id: healthy
    faults: []
  - id: credssp
    faults: [credssp-oracle-mismatch]
  - id: dns-and-ws
    faults: [dns-stale-record, {fault: firewall-websocket-blocked, on: client}]
"""


@pytest.fixture
def lab_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    # another basename than tests/test_lab.py: both are imported in one process
    shutil.copy(REPO / "tests" / "test_lab.py", pytester.path / "test_copied_lab.py")
    (pytester.path / "labs").mkdir()
    (pytester.path / "labs" / "mine.yaml").write_text(LAB)
    return pytester


def test_lab_file_option_runs_every_scenario(lab_dir: pytest.Pytester) -> None:
    result = lab_dir.runpytest("--lab-file=labs/mine.yaml", "-q", "-p", "no:cacheprovider")
    # healthy: healthy, no_collateral, call_budget; faulted: 7 tests each
    result.assert_outcomes(passed=3 + 2 * 7)
    result.stdout.no_fnmatch_line("*skipped*")


def test_ids_are_scenario_ids_and_k_selects(lab_dir: pytest.Pytester) -> None:
    result = lab_dir.runpytest("--lab-file=labs/mine.yaml", "-k", "credssp", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_detect[[]credssp[]]*", "*test_fix[[]credssp[]]*"])
    result.stdout.no_fnmatch_line("*dns-and-ws*")


def test_bad_lab_file_stops_with_file_line_field(lab_dir: pytest.Pytester) -> None:
    (lab_dir.path / "labs" / "bad.yaml").write_text(LAB.replace("credssp-oracle-mismatch", "nope"))
    result = lab_dir.runpytest("--lab-file=labs/bad.yaml", "-q")
    assert result.ret != 0
    result.stderr.fnmatch_lines(
        ["*labs/bad.yaml:8: scenarios[[]1[]].faults[[]0[]]: unknown fault id 'nope'*"]
    )
    result.stdout.no_fnmatch_line("*passed*")


def test_reports_carry_evidence(lab_dir: pytest.Pytester) -> None:
    result = lab_dir.runpytest(
        "--lab-file=labs/mine.yaml",
        "--html=out/lab.html",
        "--self-contained-html",
        "--junitxml=out/lab.xml",
        "-q",
    )
    result.assert_outcomes(passed=17)
    page = (lab_dir.path / "out" / "lab.html").read_text()
    assert "What ran on what" in page
    assert "in-process Windows twins" in page
    assert "credssp-oracle-mismatch" in page
    assert "KB 4093492 matrix" in page  # the failing stage's evidence
    assert "not applied" in page  # the withheld lowers-security fix is reported
    tree = ET.parse(lab_dir.path / "out" / "lab.xml")
    props = {
        p.get("name"): p.get("value")
        for case in tree.iter("testcase")
        if case.get("name") == "test_symptom[credssp]"
        for p in case.iter("property")
    }
    assert props["failed_stage"] == "credssp"
    assert props["provider"] == "sim"


def test_unknown_provider_is_a_clear_error(lab_dir: pytest.Pytester) -> None:
    result = lab_dir.runpytest("--lab-file=labs/mine.yaml", "--lab-provider=cloud", "-q")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*unknown provider 'cloud'*"])


def test_fix_via_script_on_sim_is_a_usage_error(lab_dir: pytest.Pytester) -> None:
    """--lab-fix-via=script runs exported PowerShell: sim has none, so it stops at once."""
    result = lab_dir.runpytest("--lab-file=labs/mine.yaml", "--lab-fix-via=script", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lab-fix-via=script * needs a real provider*"])
    result.stdout.no_fnmatch_line("*passed*")
