"""One scenario, end to end. The lifecycle is data: each step is a function over the
scenario's run (``ScenarioRun``), registered by name in ``STEP_FUNCS``, and ``STEPS`` is the
sequence that ``run_scenario`` executes. Other commands compose the same steps in another
order or subset (``DIAGNOSE``, ``BREAK``, ...), so the lab suite, ``diagnose``, ``fix``,
exercises and ``serve`` share one path for each piece of work.

reset -> baseline -> connect (before the break) -> break -> gather -> detect -> connect ->
fix -> verify (gather, detect, connect) -> fix again (must change nothing) -> diff against
the baseline -> judge (does the state after the fix weaken security against the baseline?
``rdplab.security``) -> settle (which machines the next reset may leave
alone: the cheaper-reset rule, docs/scale.md).

A scenario that brings its own fix (``fix:`` in the lab file, ``Scenario.fix``) runs it in
place of the catalog's. A script fix needs Windows PowerShell: where the provider has none
(``sim``), the fix step ends the run with ``run.skipped`` set, and the aspects that need the
fix are skipped with that reason.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rdplab import catalog as cat
from rdplab.catalog.base import ALL_ROLES, ROLES, DetectContext, Finding, Fix, Role
from rdplab.connection import ConnectionResult
from rdplab.errors import RdplabError
from rdplab.facts import Facts
from rdplab.lab import Scenario, break_parts
from rdplab.network import Network
from rdplab.ops import BatchResult, Op, render, render_op
from rdplab.plan import Part, compose
from rdplab.providers.base import LabMachines, Provider
from rdplab.security import Weakening, judge


@dataclass
class AppliedFix:
    fault: str
    on: Role
    fix: Fix
    ops: dict[Role, list[Op]]
    origin: str = "catalog"  # or the lab file and line of a scenario's own fix


class StepSkip(Exception):  # noqa: N818 - a skip, not an error
    """A step cannot run on this provider (a script fix on ``sim``): the run stops there,
    without an error, and ``run.skipped`` holds the reason."""


@dataclass(frozen=True)
class FixChoice:
    """Which fixes ``plan-fix`` picks for the findings (``rdplab fix``): every finding's
    first safe fix, or only the findings of ``faults``, or the fixes named in ``fixes``
    (each replaces the default for the findings that offer it). A fix that lowers security
    is picked only when named and ``allow_lowers_security`` is set."""

    faults: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()
    allow_lowers_security: bool = False


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
    #: the connection at the baseline, before the break (the report's first diagram)
    connection_before: ConnectionResult | None = None
    connection: ConnectionResult | None = None
    fixes: list[AppliedFix] = field(default_factory=list)
    withheld: list[AppliedFix] = field(default_factory=list)
    fix_results: dict[str, BatchResult] = field(default_factory=dict)
    findings_after: list[Finding] = field(default_factory=list)
    connection_after: ConnectionResult | None = None
    fix_again_results: dict[str, BatchResult] = field(default_factory=dict)
    diff: dict[str, list[tuple[str, Any, Any]]] = field(default_factory=dict)
    allowed: list[str] = field(default_factory=list)
    weakened: list[Weakening] = field(default_factory=list)
    judged: bool = False
    skipped: str | None = None
    skipped_step: str | None = None
    calls: dict[str, int] = field(default_factory=dict)
    max_calls_per_machine_phase: int = 0
    seconds: float = 0.0
    fix_choice: FixChoice = field(default_factory=FixChoice)
    #: How the fix phases reach the machines: ``batch`` (the agent's op batch) or
    #: ``script`` (the exported remediation script, so the lab proves what operations run).
    fix_via: str = "batch"
    fix_scripts: dict[str, str] = field(default_factory=dict)  # role -> script that ran
    #: named fixes that lower security and were not allowed (plan-fix refuses to apply)
    refused: list[AppliedFix] = field(default_factory=list)
    #: machines the reset step restored (the others were left at their baseline by the
    #: scenario before), and those this scenario left at its baseline (``settle``)
    restored: list[str] = field(default_factory=list)
    left_clean: list[str] = field(default_factory=list)
    # working state shared by the steps (not evidence: left out of repr and comparisons)
    provider_obj: Provider | None = field(default=None, repr=False, compare=False)
    machines: LabMachines | None = field(default=None, repr=False, compare=False)
    base: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)
    after: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)
    facts: dict[Role, Facts] = field(default_factory=dict, repr=False, compare=False)
    facts_after: dict[Role, Facts] = field(default_factory=dict, repr=False, compare=False)

    @property
    def lab(self) -> LabMachines:
        """The machines, once the reset step has handed them out."""
        if self.machines is None:
            raise RdplabError("no machines: the reset step has not run")
        return self.machines

    @property
    def ctx_values(self) -> dict[str, str | int]:
        return self.scenario.network.context()

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
        """The chosen fixes as one batch per machine, composed (``rdplab.plan``)."""
        return fix_plan(self.fixes)


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


def gather_args(role: Role, net: Network, gathered: Mapping[Role, Facts]) -> dict[str, Any]:
    """What to gather on ``role``: the firewall rules for the port clients dial, plus what
    each fault declares it needs (``Fault.gather_needs``), given the machines gathered so
    far."""
    args: dict[str, Any] = {"ports": [net.port]}
    for fault in cat.catalog().values():
        for name, values in fault.gather_needs(role, gathered).items():
            args[name] = sorted({*args.get(name, ()), *values})
    return args


#: The host is gathered first: the client's probes may depend on the host's facts (the CRL
#: locations of its certificates). A lab's router comes before both (it holds no probes).
GATHER_ORDER: tuple[Role, ...] = ("router", "host", "client")


def gather_all(machines: LabMachines, net: Network) -> dict[Role, Facts]:
    """Each machine's facts, one call per machine."""
    gathered: dict[Role, Facts] = {}
    for role in GATHER_ORDER:
        if role == "router" and machines.router is None:
            continue
        gathered[role] = machines.backend(role).gather(gather_args(role, net, gathered))
    return gathered


def detect(facts: Mapping[Role, Facts], net: Network) -> list[Finding]:
    return cat.detect_all(DetectContext(facts["client"], facts["host"], net, facts.get("router")))


def plan_fixes(scenario: Scenario) -> tuple[list[AppliedFix], list[AppliedFix]]:
    """The fixes to apply and those withheld (they lower security and the scenario did not
    opt in). A scenario's own fix replaces the catalog's: it is the one fix, none withheld."""
    ctx = scenario.network.context()
    if scenario.fix is not None:
        own = scenario.fix
        ops = {
            role: [render_op(o, ctx) for o in own.fix.ops.get(role, ())] for role in scenario.roles
        }
        on: Role = "host"
        if own.on is not None:
            on = own.on
        elif ops["client"] and not ops["host"]:
            on = "client"
        faults = ", ".join(pf.label for pf in scenario.faults) or "(no fault)"
        return [
            AppliedFix(faults, on, own.fix, {r: o for r, o in ops.items() if o}, own.origin)
        ], []
    chosen: list[AppliedFix] = []
    withheld: list[AppliedFix] = []
    for pf in scenario.faults:
        for fix, bucket in [(pf.placement.fix(scenario.allow_lowers_security), chosen)] + [
            (w, withheld) for w in pf.placement.withheld(scenario.allow_lowers_security)
        ]:
            ops = {
                role: [render_op(o, ctx) for o in fix.ops.get(role, ())] for role in scenario.roles
            }
            bucket.append(
                AppliedFix(pf.fault.id, pf.placement.on, fix, {r: o for r, o in ops.items() if o})
            )
    return chosen, withheld


def offered_fixes(found: Finding, scenario: Scenario) -> list[AppliedFix]:
    """Every fix the fault offers on the finding's machine (its placements there), with
    its ops rendered for the scenario's network."""
    ctx = scenario.network.context()
    fixes = {
        fx.id: fx for p in cat.get(found.fault).placements if p.on == found.role for fx in p.fixes
    }
    out = []
    for fx in fixes.values():
        ops = {role: [render_op(o, ctx) for o in fx.ops.get(role, ())] for role in scenario.roles}
        out.append(AppliedFix(found.fault, found.role, fx, {r: o for r, o in ops.items() if o}))
    return out


def fixes_for_findings(
    findings: Iterable[Finding], scenario: Scenario, choice: FixChoice
) -> tuple[list[AppliedFix], list[AppliedFix], list[AppliedFix]]:
    """(chosen, withheld, refused) fixes for what detection found: the first safe fix of
    each finding unless ``choice`` names another; the other lowers-security fixes are
    withheld, and a named one is refused unless ``choice`` allows lowering security."""
    chosen: list[AppliedFix] = []
    withheld: list[AppliedFix] = []
    refused: list[AppliedFix] = []
    for f in findings:
        if choice.faults and f.fault not in choice.faults:
            continue
        offered = offered_fixes(f, scenario)
        named = [af for af in offered if af.fix.id in choice.fixes]
        if choice.fixes and not named:
            continue
        picks = named or [next(af for af in offered if af.fix.risk == "safe")]
        for af in offered:
            if af in picks and (af.fix.risk == "safe" or choice.allow_lowers_security):
                chosen.append(af)
            elif af in picks:
                refused.append(af)
            elif af.fix.risk == "lowers-security":
                withheld.append(af)
    return chosen, withheld, refused


def break_plan(scenario: Scenario) -> dict[Role, list[Op]]:
    """The ops that put the scenario's faults in place: one composed batch per machine
    (``rdplab.plan``: service start types first, run states last)."""
    plan: dict[Role, list[Op]] = {}
    for role in scenario.roles:
        ops = compose(break_parts(scenario.faults, role, scenario.network))
        if ops:
            plan[role] = ops
    return plan


def fix_parts(fixes: Iterable[AppliedFix], role: Role) -> list[Part]:
    return [Part(af.fix.id, tuple(af.ops[role])) for af in fixes if af.ops.get(role)]


def fix_plan(fixes: Iterable[AppliedFix]) -> dict[str, list[Op]]:
    """Fixes as one composed batch per machine (``rdplab.plan``)."""
    fixes = list(fixes)
    plan: dict[str, list[Op]] = {}
    for role in ALL_ROLES:
        ops = compose(fix_parts(fixes, role))
        if ops:
            plan[role] = ops
    return plan


def apply_plan(
    machines: LabMachines, plan: Mapping[str, list[Op]], what: str
) -> dict[str, BatchResult]:
    """One batch per machine; the first failing batch stops the run (it rolled back)."""
    results: dict[str, BatchResult] = {}
    for role in ALL_ROLES:
        if plan.get(role):
            result = machines.backend(role).apply(list(plan[role]))
            results[role] = result
            if result.errors:
                raise RdplabError(f"{what} on {role} failed: {result.errors[0].error}")
    return results


# -- the steps ------------------------------------------------------------------------------

StepFunc = Callable[["ScenarioRun"], None]


@dataclass(frozen=True)
class Step:
    """One lifecycle step. ``phase``: the call-log phase its remote calls count under (None:
    the step makes no remote call)."""

    name: str
    func: StepFunc
    phase: str | None


STEP_FUNCS: dict[str, Step] = {}


def step(name: str, *, remote: bool = True) -> Callable[[StepFunc], StepFunc]:
    def register(func: StepFunc) -> StepFunc:
        STEP_FUNCS[name] = Step(name, func, name if remote else None)
        return func

    return register


@step("reset", remote=False)  # a provider's own work (restore, rebuild), not a batch
def reset(run: ScenarioRun) -> None:
    if run.provider_obj is None:
        raise RdplabError("no provider to reset the lab with")
    run.scenario = run.provider_obj.place(run.scenario)  # a worker's own lab (vagrant)
    run.machines = run.provider_obj.reset(run.scenario)
    run.restored = list(run.provider_obj.last_restored)


@step("attach", remote=False)  # the machines as they are: nothing restored, nothing changed
def attach(run: ScenarioRun) -> None:
    if run.provider_obj is None:
        raise RdplabError("no provider to attach to the machines with")
    run.machines = run.provider_obj.attach(run.scenario)


@step("baseline")
def baseline(run: ScenarioRun) -> None:
    run.base = {role: run.lab.backend(role).snapshot() for role in run.scenario.roles}


@step("connect-before")
def connect_before(run: ScenarioRun) -> None:
    """The connection at the baseline, before anything is broken."""
    assert run.provider_obj is not None
    run.connection_before = run.provider_obj.connect(run.scenario, run.lab)


@step("break")
def break_(run: ScenarioRun) -> None:
    run.break_ops = {role: ops for role, ops in break_plan(run.scenario).items()}
    run.break_results = apply_plan(run.lab, run.break_ops, "break")


@step("gather")
def gather(run: ScenarioRun) -> None:
    run.facts = gather_all(run.lab, run.scenario.network)


@step("detect", remote=False)
def detect_step(run: ScenarioRun) -> None:
    run.findings = detect(run.facts, run.scenario.network)


@step("connect")
def connect(run: ScenarioRun) -> None:
    assert run.provider_obj is not None
    run.connection = run.provider_obj.connect(run.scenario, run.lab)


@step("fix")
def fix(run: ScenarioRun) -> None:
    run.fixes, run.withheld = plan_fixes(run.scenario)
    run.fix_results = apply_fix(run)


def apply_fix(run: ScenarioRun) -> dict[str, BatchResult]:
    """The planned fix, one call per machine: its op batches, or a scenario's script."""
    own = run.scenario.fix
    if run.fix_via == "script" and (own is None or own.script is None):
        return apply_exported(run)
    if own is None or own.script is None:
        return apply_plan(run.lab, run._fix_plan(), "fix")
    assert own.on is not None
    backend = run.lab.backend(own.on)
    if not backend.runs_powershell:
        raise StepSkip(
            f"the scenario's fix is a PowerShell script ({own.script.name}) and provider"
            f" {run.provider} runs no PowerShell ({run.runs_on}); run it on a real provider"
        )
    result = backend.run_script(own.script.read_text(encoding="utf-8-sig"))
    if result.errors:
        raise RdplabError(f"fix script on {own.on} failed: {result.errors[0].error}")
    return {own.on: result}


def fix_exports(run: ScenarioRun) -> dict[Role, Any]:
    """The remediation script each machine's part of the planned fix is, as ``rdplab
    export`` writes it: a machine with one catalog fix gets exactly that fix's export (with
    the lab's network); several fixes on one machine (or a lab file's own) are one script."""
    from rdplab import export as ex

    out: dict[Role, Any] = {}
    for role in ROLES:  # the Windows machines' scripts; a router's is a shell script
        applied = [af for af in run.fixes if af.ops.get(role)]
        if not applied:
            continue
        if len(applied) == 1 and applied[0].origin == "catalog":
            af = applied[0]
            exports = ex.catalog_exports(cat.get(af.fault), af.fix.id, run.scenario.network)
            out[role] = next(e for e in exports if e.role == role)
            continue
        ops = tuple(compose(fix_parts(applied, role)))
        risky = any(af.fix.risk == "lowers-security" for af in applied)
        fix = Fix(
            "+".join(af.fix.id for af in applied),
            " ".join(af.fix.summary for af in applied),
            {role: ops},
            "lowers-security" if risky else applied[0].fix.risk,
        )
        faults = [pf.fault for pf in run.scenario.faults]
        out[role] = ex.Export(
            f"{run.scenario.id}--{role}",
            ", ".join(af.fault for af in applied),
            f"scenario {run.scenario.id}",
            fix,
            role,
            ops,
            tuple(dict.fromkeys(src for f in faults for src in f.sources)),
            ", ".join(dict.fromkeys(af.origin for af in applied)),
        )
    return out


def apply_exported(run: ScenarioRun) -> dict[str, BatchResult]:
    """The fix phase through the exported scripts: one call per machine, the script's own
    results (``-AllowLowerSecurity`` only when the scenario opted in)."""
    from rdplab import export as ex

    results: dict[str, BatchResult] = {}
    for role, export in fix_exports(run).items():
        backend = run.lab.backend(role)
        if not backend.runs_powershell:
            raise RdplabError(f"--lab-fix-via=script needs PowerShell; {run.provider} has none")
        params = ("-AllowLowerSecurity",) if run.scenario.allow_lowers_security else ()
        result = backend.run_script(ex.script(export), params)
        run.fix_scripts[role] = export.filename
        results[role] = result
        if result.errors:
            raise RdplabError(
                f"fix script {export.filename} on {role} failed: {result.errors[0].error}"
            )
    return results


def first_fixes(scenario: Scenario) -> list[AppliedFix]:
    """The first fix of a scenario where something is hidden: the catalog fixes of the
    faults that hide others (``Scenario.masking``), nothing else."""
    labels = {label for m in scenario.masking() for label in m.by}
    hiders = {(pf.fault.id, pf.placement.on) for pf in scenario.faults if pf.label in labels}
    chosen, _ = plan_fixes(scenario)
    return [af for af in chosen if (af.fault, af.on) in hiders]


@step("fix-first")
def fix_first(run: ScenarioRun) -> None:
    """Fix only what hides other faults; the steps after it must then find them (the
    detectors the declared ones, the connection the ones it did not reach)."""
    run.fixes = first_fixes(run.scenario)
    run.fix_results = apply_plan(run.lab, run._fix_plan(), "first fix")


@step("plan-fix", remote=False)
def plan_fix(run: ScenarioRun) -> None:
    """The fixes for what the detect step found (not the scenario's planted faults)."""
    run.fixes, run.withheld, run.refused = fixes_for_findings(
        run.findings, run.scenario, run.fix_choice
    )


@step("apply-fix")
def apply_fix_step(run: ScenarioRun) -> None:
    """Apply what plan-fix chose: one batch per machine."""
    run.fix_results = apply_plan(run.lab, run._fix_plan(), "fix")


@step("verify-gather")
def verify_gather(run: ScenarioRun) -> None:
    run.facts_after = gather_all(run.lab, run.scenario.network)


@step("verify-detect", remote=False)
def verify_detect(run: ScenarioRun) -> None:
    run.findings_after = detect(run.facts_after, run.scenario.network)


@step("verify-connect")
def verify_connect(run: ScenarioRun) -> None:
    assert run.provider_obj is not None
    run.connection_after = run.provider_obj.connect(run.scenario, run.lab)


@step("fix-again")
def fix_again(run: ScenarioRun) -> None:
    run.fix_again_results = apply_fix(run)


@step("diff")
def diff_step(run: ScenarioRun) -> None:
    after: dict[str, dict[str, Any]] = {
        role: run.lab.backend(role).snapshot() for role in run.scenario.roles
    }
    run.after = after
    run.diff = {role: diff(run.base[role], after[role]) for role in run.scenario.roles}
    ctx = run.ctx_values
    run.allowed = sorted(
        render(p, ctx)
        for p in {p for pf in run.scenario.faults for p in pf.placement.leaves}
        | {p for af in run.fixes for p in af.fix.leaves}
    )


@step("judge", remote=False)
def judge_step(run: ScenarioRun) -> None:
    """Security: the state after the fix (the diff step's snapshots) against the baseline,
    setting by setting (``rdplab.security.SETTINGS``). Reads state, not the fix's label."""
    run.weakened = judge(run.base, run.after)
    run.judged = True


@step("settle", remote=False)
def settle(run: ScenarioRun) -> None:
    """The cheaper-reset rule: a machine whose diff against the baseline came out empty,
    in a scenario that ran no script fix and failed nothing, is at its baseline; the next
    reset may skip restoring it. Anything else (a run that stopped early never gets here)
    is restored."""
    assert run.provider_obj is not None
    clean = clean_roles(run)
    run.left_clean = list(clean)
    run.provider_obj.settle(run.scenario, clean)


def clean_roles(run: ScenarioRun) -> tuple[Role, ...]:
    """The machines ``run`` left exactly at its baseline, or none if the scenario failed
    in any way the lab suite checks (a failed scenario always forces a restore)."""
    conn, after = run.connection, run.connection_after
    failed = (
        run.error is not None
        or {(f.fault, f.role) for f in run.findings} != run.scenario.expected()
        or bool(run.findings_after)
        or after is None
        or not after.ok
        or (run.scenario.healthy and not (conn is not None and conn.ok))
        or any(b.changes for b in run.fix_again_results.values())
    )
    if failed:
        return ()
    own = run.scenario.fix
    # a script's effects are only as visible as the facts it happens to touch: a scenario's
    # own script fix, or every fix run as the exported scripts (--lab-fix-via=script)
    scripted: set[str] = set()
    if own is not None and own.script is not None and own.on is not None:
        scripted.add(own.on)
    if run.fix_via == "script":
        scripted |= set(run.fix_results) | set(run.fix_again_results)
    return tuple(r for r in ROLES if r in run.diff and not run.diff[r] and r not in scripted)


def steps(*names: str) -> tuple[Step, ...]:
    """Steps by name, in the order given (an unknown name is a programming error)."""
    return tuple(STEP_FUNCS[n] for n in names)


#: The lab suite: the whole lifecycle. This is what ``run_scenario`` runs.
STEPS = steps(
    "reset",
    "baseline",
    "connect-before",
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
    "judge",
    "settle",
)
#: Put a scenario's faults in place on fresh machines (exercises, serve, ``rdplab break``).
BREAK = steps("reset", "break")
#: Read-only: what is wrong and what the user sees (diagnose, exercise check).
DIAGNOSE = steps("gather", "detect", "connect")
#: Real machines as they are (``rdplab diagnose --inventory``): nothing is restored.
DIAGNOSE_AS_IS = steps("attach", "gather", "detect", "connect")
#: What was hidden comes to light once its hiders are fixed (the composition tests).
UNMASK = steps("reset", "break", "fix-first", "gather", "detect", "connect")
#: Repair what detection found, and prove it (``rdplab fix`` after DIAGNOSE).
REPAIR_FOUND = steps("plan-fix", "apply-fix", "verify-gather", "verify-detect", "verify-connect")


def new_run(provider: Provider, scenario: Scenario, fix_via: str = "batch") -> ScenarioRun:
    return ScenarioRun(
        scenario, provider.name, provider.runs_on, provider_obj=provider, fix_via=fix_via
    )


def run_steps(run: ScenarioRun, sequence: Iterable[Step]) -> ScenarioRun:
    """Run each step in order; a step that raises ``RdplabError`` ends the run with the
    error and the step recorded. Calls are counted per machine and step."""
    start = time.perf_counter()
    current = "start"
    try:
        for st in sequence:
            current = st.name
            if st.phase and run.machines is not None:
                run.machines.calls.phase = st.phase
            st.func(run)
            run.steps.append(st.name)
    except StepSkip as skip:
        run.skipped, run.skipped_step = str(skip), current
    except RdplabError as exc:
        run.error, run.failed_step = exc.message, current
    finally:
        run.seconds += time.perf_counter() - start
        if run.machines is not None:
            run.calls = run.machines.calls.to_json()
            run.max_calls_per_machine_phase = run.machines.calls.max_per_machine_phase
    return run


def run_scenario(
    provider: Provider,
    scenario: Scenario,
    sequence: Iterable[Step] = STEPS,
    fix_via: str = "batch",
) -> ScenarioRun:
    """Run the lifecycle (``STEPS`` by default) for one scenario on the provider's lab."""
    return run_steps(new_run(provider, scenario, fix_via), sequence)
