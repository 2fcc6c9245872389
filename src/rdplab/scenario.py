"""One scenario, end to end. The lifecycle is data (STEPS); the runner records evidence.

reset -> baseline -> break -> gather -> detect -> connect -> fix -> verify (gather, detect,
connect) -> fix again (must change nothing) -> diff against the baseline.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field
from typing import Any

from rdplab import catalog as cat
from rdplab.catalog.base import ROLES, DetectContext, Finding, Fix, Role
from rdplab.catalog.cert_revocation_unreachable import probe_urls
from rdplab.connection import ConnectionResult
from rdplab.errors import RdplabError
from rdplab.facts import Facts
from rdplab.lab import Scenario
from rdplab.network import Network
from rdplab.ops import BatchResult, Op, render, render_op
from rdplab.providers.base import LabMachines, Provider

STEPS = (
    "reset",
    "baseline",
    "break",
    "gather",
    "detect",
    "connect",
    "fix",
    "verify-gather",
    "verify-detect",
    "verify-connect",
    "fix-again",
    "diff",
)


@dataclass
class AppliedFix:
    fault: str
    on: Role
    fix: Fix
    ops: dict[Role, list[Op]]


@dataclass
class ScenarioRun:
    scenario: Scenario
    provider: str
    runs_on: str
    steps: list[str] = field(default_factory=list)
    error: str | None = None
    failed_step: str | None = None
    break_ops: dict[str, list[Op]] = field(default_factory=dict)
    break_results: dict[str, BatchResult] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    connection: ConnectionResult | None = None
    fixes: list[AppliedFix] = field(default_factory=list)
    withheld: list[AppliedFix] = field(default_factory=list)
    fix_results: dict[str, BatchResult] = field(default_factory=dict)
    findings_after: list[Finding] = field(default_factory=list)
    connection_after: ConnectionResult | None = None
    fix_again_results: dict[str, BatchResult] = field(default_factory=dict)
    diff: dict[str, list[tuple[str, Any, Any]]] = field(default_factory=dict)
    allowed: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    max_calls_per_machine_phase: int = 0
    seconds: float = 0.0

    @property
    def unexpected_diff(self) -> dict[str, list[tuple[str, Any, Any]]]:
        out = {}
        for role, changes in self.diff.items():
            left = [c for c in changes if not allowed(f"{role}:{c[0]}", self.allowed)]
            if left:
                out[role] = left
        return out

    def fix_ops(self) -> dict[str, list[str]]:
        return {role: [str(o) for o in ops] for role, ops in self._fix_plan().items()}

    def _fix_plan(self) -> dict[str, list[Op]]:
        plan: dict[str, list[Op]] = {}
        for af in self.fixes:
            for role, ops in af.ops.items():
                plan.setdefault(role, []).extend(ops)
        return plan


def allowed(path: str, patterns: list[str]) -> bool:
    low = path.lower()
    return any(fnmatch.fnmatchcase(low, p.lower()) for p in patterns)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}/{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        out = {}
        for i, v in enumerate(data):
            out.update(flatten(v, f"{prefix}/{i}"))
        return out
    return {prefix: data}


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Changed leaf paths. An empty mapping that merely gained or lost children (a key that
    got its first value) is not a change of its own: the children show."""
    a, b = flatten(before), flatten(after)
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if x == y:
            continue
        if x == {} and y is None and _has_children(b, k):
            continue
        if y == {} and x is None and _has_children(a, k):
            continue
        out.append((k, x, y))
    return out


def _has_children(flat: dict[str, Any], prefix: str) -> bool:
    return any(k.startswith((prefix + "/", prefix + "\\")) for k in flat)


def gather_both(machines: LabMachines, net: Network) -> tuple[Facts, Facts]:
    """Host first: the client's gather probes the CRL locations of the host's certificates.
    Both include firewall rules for the port clients dial."""
    host = machines.host.gather({"ports": [net.port]})
    client = machines.client.gather({"ports": [net.port], "probe_urls": probe_urls(host.raw)})
    return client, host


def plan_fixes(scenario: Scenario) -> tuple[list[AppliedFix], list[AppliedFix]]:
    ctx = scenario.network.context()
    chosen: list[AppliedFix] = []
    withheld: list[AppliedFix] = []
    for pf in scenario.faults:
        for fix, bucket in [(pf.placement.fix(scenario.allow_lowers_security), chosen)] + [
            (w, withheld) for w in pf.placement.withheld(scenario.allow_lowers_security)
        ]:
            ops = {role: [render_op(o, ctx) for o in fix.ops.get(role, ())] for role in ROLES}
            bucket.append(
                AppliedFix(pf.fault.id, pf.placement.on, fix, {r: o for r, o in ops.items() if o})
            )
    return chosen, withheld


def run_scenario(provider: Provider, scenario: Scenario) -> ScenarioRun:
    """Run every step; a step that raises ends the run with the error recorded."""
    run = ScenarioRun(scenario, provider.name, provider.runs_on)
    start = time.perf_counter()
    step = "reset"
    try:
        machines = provider.reset(scenario)
        run.steps.append(step)
        calls = machines.calls
        ctx_values = scenario.network.context()

        step = calls.phase = "baseline"
        base = {role: machines.backend(role).snapshot() for role in ROLES}
        run.steps.append(step)

        step = calls.phase = "break"
        for role in ROLES:
            ops = [
                render_op(o, ctx_values)
                for pf in scenario.faults
                for o in pf.placement.breaks.get(role, ())
            ]
            if ops:
                run.break_ops[role] = ops
                result = machines.backend(role).apply(ops)
                run.break_results[role] = result
                if result.errors:
                    raise RdplabError(f"break on {role} failed: {result.errors[0].error}")
        run.steps.append(step)

        step = calls.phase = "gather"
        client, host = gather_both(machines, scenario.network)
        run.steps.append(step)
        step = "detect"
        run.findings = cat.detect_all(DetectContext(client, host, scenario.network))
        run.steps.append(step)
        step = calls.phase = "connect"
        run.connection = provider.connect(scenario, machines)
        run.steps.append(step)

        step = calls.phase = "fix"
        run.fixes, run.withheld = plan_fixes(scenario)
        run.fix_results = _apply(machines, run._fix_plan())
        run.steps.append(step)

        step = calls.phase = "verify-gather"
        client, host = gather_both(machines, scenario.network)
        run.steps.append(step)
        step = "verify-detect"
        run.findings_after = cat.detect_all(DetectContext(client, host, scenario.network))
        run.steps.append(step)
        step = calls.phase = "verify-connect"
        run.connection_after = provider.connect(scenario, machines)
        run.steps.append(step)

        step = calls.phase = "fix-again"
        run.fix_again_results = _apply(machines, run._fix_plan())
        run.steps.append(step)

        step = calls.phase = "diff"
        after = {role: machines.backend(role).snapshot() for role in ROLES}
        run.diff = {role: diff(base[role], after[role]) for role in ROLES}
        run.allowed = sorted(
            render(p, ctx_values)
            for p in {p for pf in scenario.faults for p in pf.placement.leaves}
            | {p for af in run.fixes for p in af.fix.leaves}
        )
        run.steps.append(step)
        run.calls = calls.to_json()
        run.max_calls_per_machine_phase = calls.max_per_machine_phase
    except RdplabError as exc:
        run.error, run.failed_step = exc.message, step
    finally:
        run.seconds = time.perf_counter() - start
    return run


def _apply(machines: LabMachines, plan: dict[str, list[Op]]) -> dict[str, BatchResult]:
    results: dict[str, BatchResult] = {}
    for role in ROLES:
        if plan.get(role):
            result = machines.backend(role).apply(plan[role])
            results[role] = result
            if result.errors:
                raise RdplabError(f"fix on {role} failed: {result.errors[0].error}")
    return results
