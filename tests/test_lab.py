"""The lab suite: every scenario of the lab file, broken, detected, fixed and verified.

Runs unchanged on every provider (``--lab-provider=sim|vagrant|inventory``). Select a
scenario with ``-k``, e.g. ``tox -e lab -- -k credssp``.
"""

from __future__ import annotations

import pytest

from rdplab.catalog.base import STAGES
from rdplab.plugin import LabSession
from rdplab.scenario import ScenarioRun

pytestmark = pytest.mark.lab


def _ok(run: ScenarioRun, *, needs_fix: bool = False) -> None:
    """Fail when the run stopped on an error; skip an aspect that needs the fix when the
    provider could not run it (a script fix on sim: the one skip allowed there)."""
    __tracebackhide__ = True
    if run.error:
        pytest.fail(f"scenario {run.scenario.id} stopped at step {run.failed_step}: {run.error}")
    if needs_fix and run.skipped:
        pytest.skip(run.skipped)


@pytest.mark.lab_scenarios("healthy")
@pytest.mark.lab_aspect("healthy")
def test_healthy(lab_run: ScenarioRun) -> None:
    """A healthy lab: nothing flagged, the connection succeeds, nothing changes."""
    _ok(lab_run, needs_fix=True)
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
    _ok(lab_run, needs_fix=True)
    left = [f"{f.fault}@{f.role}: {f.summary} {dict(f.evidence)}" for f in lab_run.findings_after]
    assert left == [], "still found after the fix:\n" + "\n".join(left)
    conn = lab_run.connection_after
    assert conn is not None and conn.ok, conn and conn.evidence
    assert sum(b.changes for b in lab_run.fix_results.values()) > 0, "the fix changed nothing"


@pytest.mark.lab_scenarios("faulted")
@pytest.mark.lab_aspect("idempotent")
def test_idempotent(lab_run: ScenarioRun) -> None:
    """Running the same fix again reports zero changes."""
    _ok(lab_run, needs_fix=True)
    changed = {
        role: [r.op + ": " + r.detail for r in batch.results if r.changed]
        for role, batch in lab_run.fix_again_results.items()
    }
    assert all(not c for c in changed.values()), changed


@pytest.mark.lab_aspect("collateral")
def test_no_collateral(lab_run: ScenarioRun) -> None:
    """Against the baseline, only what the faults declare may stay changed."""
    _ok(lab_run, needs_fix=True)
    assert lab_run.unexpected_diff == {}


@pytest.mark.lab_scenarios("faulted")
@pytest.mark.lab_aspect("security")
def test_lowers_security_needs_opt_in(lab_run: ScenarioRun) -> None:
    """A fix that leaves a security setting weaker than the baseline runs only when the
    scenario opts in. The judge reads the machines' state after the fix (rdplab.security),
    not the fix's label, so a lab file's own fix is held to it too."""
    _ok(lab_run, needs_fix=True)
    assert lab_run.judged, "the security judge did not run"
    if not lab_run.scenario.allow_lowers_security:
        assert lab_run.weakened == [], "\n".join(
            [
                "the fix lowers security and the scenario does not opt in"
                " (allow_lowers_security: true):"
            ]
            + [f"  {w}" for w in lab_run.weakened]
        )
    for w in lab_run.withheld:
        assert w.fix.risk == "lowers-security"
    if lab_run.scenario.allow_lowers_security and lab_run.scenario.fix is None:
        risky = [af for af in lab_run.fixes if af.fix.risk == "lowers-security"]
        offered = [pf for pf in lab_run.scenario.faults if len(pf.placement.fixes) > 1]
        assert len(risky) == len(offered) > 0


@pytest.mark.lab_aspect("calls")
def test_call_budget(lab_run: ScenarioRun) -> None:
    """At most one remote call per machine per phase."""
    _ok(lab_run)
    assert lab_run.max_calls_per_machine_phase <= 1, lab_run.calls


@pytest.mark.lab_scenarios("routed")
@pytest.mark.lab_aspect("router")
def test_router_rules_after_the_fix(lab_run: ScenarioRun, lab_session: LabSession) -> None:
    """On a real router (inventory or Vagrant), pytest-testinfra reads its nftables rules
    after the fix: the RDP port is forwarded to the host's address, and where the scenario
    clamps the MSS the rule is there. (Generated only for scenarios with a router on the
    real providers: the sim and netns routers live only inside the run.)"""
    from rdplab.testinfra_hosts import router_rules

    _ok(lab_run, needs_fix=True)
    host = lab_session.provider.testinfra_host("router")
    assert host is not None, "the provider has no router to read"
    rules = router_rules(host)
    net = lab_run.scenario.network
    forward = rules["forwards"].get(str(net.target_port))
    assert forward is not None, rules
    assert net.router is not None
    assert forward["to"] in (net.host_address, net.router.moved_address), forward
    if any(af.fix.id == "clamp-mss" for af in lab_run.fixes):
        assert rules["mss_clamp"], rules
