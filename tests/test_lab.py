"""The lab suite: every scenario of the lab file, broken, detected, fixed and verified.

Runs unchanged on every provider (``--lab-provider=sim|vagrant|inventory``). Select a
scenario with ``-k``, e.g. ``tox -e lab -- -k credssp``.
"""

from __future__ import annotations

import pytest

from rdplab.catalog.base import STAGES
from rdplab.scenario import ScenarioRun

pytestmark = pytest.mark.lab


def _ok(run: ScenarioRun) -> None:
    __tracebackhide__ = True
    if run.error:
        pytest.fail(f"scenario {run.scenario.id} stopped at step {run.failed_step}: {run.error}")


@pytest.mark.lab_scenarios("healthy")
@pytest.mark.lab_aspect("healthy")
def test_healthy(lab_run: ScenarioRun) -> None:
    """A healthy lab: nothing flagged, the connection succeeds, nothing changes."""
    _ok(lab_run)
    assert lab_run.findings == []
    assert lab_run.connection is not None and lab_run.connection.ok, lab_run.connection
    assert lab_run.fix_ops() == {}
    assert lab_run.unexpected_diff == {}


@pytest.mark.lab_scenarios("faulted")
@pytest.mark.lab_aspect("detect")
def test_detect(lab_run: ScenarioRun) -> None:
    """Exactly the planted faults are found, on the right machines, each with evidence."""
    _ok(lab_run)
    found = {(f.fault, f.role) for f in lab_run.findings}
    assert found == lab_run.scenario.expected()
    for f in lab_run.findings:
        assert f.evidence, f"{f.fault}@{f.role} has no evidence"


@pytest.mark.lab_scenarios("faulted")
@pytest.mark.lab_aspect("symptom")
def test_symptom(lab_run: ScenarioRun) -> None:
    """The connection fails where the earliest planted fault says, with its codes."""
    _ok(lab_run)
    conn = lab_run.connection
    assert conn is not None
    first = min(STAGES.index(pf.fault.symptom.stage) for pf in lab_run.scenario.faults)
    if conn.ok and STAGES[first] in conn.not_probed:  # real machines only: sim models all
        pytest.skip(
            f"the {STAGES[first]} stage cannot be seen by the live probe on"
            f" {lab_run.provider}: {conn.not_probed[STAGES[first]]}; the probed stages"
            f" before it passed: {', '.join(s.name for s in conn.stages)}"
        )
    assert not conn.ok, "the broken lab connected"
    expected = [
        pf.fault.symptom
        for pf in lab_run.scenario.faults
        if STAGES.index(pf.fault.symptom.stage) == first
    ]
    assert conn.failed_stage == STAGES[first], conn.evidence
    assert (conn.error_code, conn.extended_code) in {
        (s.error_code, s.extended_code) for s in expected
    }
    negotiation = {s.negotiation_failure for s in expected}
    assert conn.negotiation_failure in negotiation


@pytest.mark.lab_scenarios("faulted")
@pytest.mark.lab_aspect("fix")
def test_fix(lab_run: ScenarioRun) -> None:
    """After the fix: no findings and the connection succeeds."""
    _ok(lab_run)
    assert sum(b.changes for b in lab_run.fix_results.values()) > 0, "the fix changed nothing"
    assert lab_run.findings_after == []
    conn = lab_run.connection_after
    assert conn is not None and conn.ok, conn and conn.evidence


@pytest.mark.lab_scenarios("faulted")
@pytest.mark.lab_aspect("idempotent")
def test_idempotent(lab_run: ScenarioRun) -> None:
    """Running the same fix again reports zero changes."""
    _ok(lab_run)
    changed = {
        role: [r.op + ": " + r.detail for r in batch.results if r.changed]
        for role, batch in lab_run.fix_again_results.items()
    }
    assert all(not c for c in changed.values()), changed


@pytest.mark.lab_aspect("collateral")
def test_no_collateral(lab_run: ScenarioRun) -> None:
    """Against the baseline, only what the faults declare may stay changed."""
    _ok(lab_run)
    assert lab_run.unexpected_diff == {}


@pytest.mark.lab_scenarios("faulted")
@pytest.mark.lab_aspect("security")
def test_lowers_security_needs_opt_in(lab_run: ScenarioRun) -> None:
    """A fix that lowers security runs only when the scenario opts in, and is reported."""
    _ok(lab_run)
    risky = [af for af in lab_run.fixes if af.fix.risk == "lowers-security"]
    if not lab_run.scenario.allow_lowers_security:
        assert risky == []
    else:
        offered = [pf for pf in lab_run.scenario.faults if len(pf.placement.fixes) > 1]
        assert len(risky) == len(offered) > 0
    for w in lab_run.withheld:
        assert w.fix.risk == "lowers-security"


@pytest.mark.lab_aspect("calls")
def test_call_budget(lab_run: ScenarioRun) -> None:
    """At most one remote call per machine per phase."""
    _ok(lab_run)
    assert lab_run.max_calls_per_machine_phase <= 1, lab_run.calls
