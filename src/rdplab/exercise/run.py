"""The exercise's step sequences, composed from the lifecycle steps in
``rdplab.scenario``, and what a trainee is shown.

- new on the sim: ``BREAK`` + ``DIAGNOSE`` (its connect step is the symptom), the run
  that showed the drawn scenario solvable; on a real lab the healthy state is recorded
  first (baseline) and the client's facts gathered so the probe resolves the host as the
  client does.
- inspect: ``BREAK`` + connect on fresh sim twins, rebuilt from the state file every time
  (the twins live in-process; the rebuild is deterministic).
- answer: no machine at all, only the sealed causes and the catalog.
- check on a real lab: ``DIAGNOSE_AS_IS`` (attach: nothing reset; gather, detect, the
  live probe) + diff and judge against the healthy state ``new`` recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdplab.connection import ConnectionResult
from rdplab.errors import RdplabError
from rdplab.exercise import pick
from rdplab.exercise.state import ExerciseState, StateError, seal
from rdplab.lab import Lab, Scenario, load_lab
from rdplab.ops import render_op
from rdplab.providers import get_provider
from rdplab.providers.base import Provider
from rdplab.scenario import (
    BREAK,
    DIAGNOSE_AS_IS,
    AppliedFix,
    ScenarioRun,
    new_run,
    run_steps,
    steps,
)

SIM_NEW = BREAK + steps("connect")
REAL_NEW = steps("reset", "baseline", "break", "gather", "connect")
CHECK = DIAGNOSE_AS_IS + steps("diff", "judge")

# The dialog texts. 0x904/0x7: the codes as mstsc's dialog shows them (sources.md s8; the
# wording around them is not from a Microsoft page). CredSSP: KB 4295591 (sources.md s8).
SOCKET_CLOSED_TEXT = (
    "Remote Desktop Connection: the connection was closed before a session started."
    " Error code: {error}, Extended error code: {extended}."
)
CREDSSP_TEXT = (
    "Remote Desktop Connection: An authentication error has occurred. The function"
    " requested is not supported. Remote computer: {host}. This could be due to CredSSP"
    " encryption oracle remediation."
)


@dataclass
class Made:
    state: ExerciseState
    scenario: Scenario
    causes: list[pick.Cause]
    run: ScenarioRun


def open_lab(path: Path) -> tuple[Lab, str]:
    digest = pick.lab_digest(path)
    return load_lab(path), digest


def provider_for(name: str, options: dict[str, str]) -> Provider:
    return get_provider(name, **options)


def symptom(scenario: Scenario, conn: ConnectionResult | None) -> dict[str, Any]:
    """What the user reports: the dialog and the machines, nothing the trainee must find."""
    net = scenario.network
    machines: dict[str, Any] = {
        "client": {
            "name": scenario.computer_names["client"],
            "address": net.peer_address,
            "site": net.client_site,
        },
        "host": {
            "name": scenario.computer_names["host"],
            "dialed": f"{net.host_name}:{net.target_port}",
            "transport": net.transport,
        },
    }
    if net.router is not None:  # where the client dials from is part of the report
        machines["router"] = {
            "outside_address": net.router.outside_address,
            "lan_address": net.router.lan_address,
        }
    if conn is None or conn.ok:
        return {"error_code": None, "extended_code": None, "message": "connected"} | {
            "machines": machines
        }
    if conn.error_code is None:
        message = CREDSSP_TEXT.format(host=net.host_name)
    else:
        message = SOCKET_CLOSED_TEXT.format(error=conn.error_code, extended=conn.extended_code)
    return {
        "error_code": conn.error_code,
        "extended_code": conn.extended_code,
        "message": message,
        "machines": machines,
    }


def new(
    lab_path: Path,
    seed: int,
    faults: int,
    provider_name: str = "sim",
    options: dict[str, str] | None = None,
) -> Made:
    lab, digest = open_lab(lab_path)
    scenario, causes, run = pick.draw(lab, seed, faults, digest)
    ex_id = pick.exercise_id(seed, faults, digest)
    options = options or {}
    if provider_name != "sim":
        provider = provider_for(provider_name, options)
        try:
            run = run_steps(new_run(provider, scenario), REAL_NEW)
        finally:
            provider.close()
    if run.error:
        raise RdplabError(f"exercise {ex_id}: {run.failed_step} failed: {run.error}")
    sealed: dict[str, Any] = {"causes": [c.__dict__ for c in causes]}
    if provider_name != "sim":
        sealed["baseline"] = run.base
    state = ExerciseState(
        exercise=ex_id,
        seed=seed,
        faults=faults,
        lab_file=str(lab_path.resolve()),
        lab_digest=digest,
        provider=provider_name,
        symptom=symptom(scenario, run.connection),
        sealed=seal(sealed, seed, ex_id),
        provider_options=options,
    )
    return Made(state, scenario, causes, run)


def sealed_causes(state: ExerciseState, where: str) -> tuple[list[pick.Cause], dict[str, Any]]:
    """The exercise's causes (and the rest of the sealed answer) from its state file."""
    sealed = state.answer(where)
    try:
        return pick.causes_from_json(sealed["causes"]), sealed
    except (KeyError, TypeError):
        raise StateError(f"{where}: the sealed answer holds no causes") from None


def reopen(state: ExerciseState, where: str) -> tuple[Scenario, list[pick.Cause], dict[str, Any]]:
    """The exercise's scenario and causes from its state file (the lab file must be the
    one the exercise was made from)."""
    path = Path(state.lab_file)
    if pick.lab_digest(path) != state.lab_digest:
        raise StateError(f"{where}: the lab file {path} changed since exercise {state.exercise}")
    causes, sealed = sealed_causes(state, where)
    return pick.compose(load_lab(path), state.exercise, causes), causes, sealed


def rebuild(scenario: Scenario) -> ScenarioRun:
    """Fresh sim twins, broken as ``new`` broke them, after the client's attempt."""
    run = run_steps(new_run(get_provider("sim"), scenario), SIM_NEW)
    if run.error:
        raise RdplabError(f"rebuilding the exercise failed at {run.failed_step}: {run.error}")
    return run


def all_fixes(scenario: Scenario) -> list[AppliedFix]:
    """Every fix the catalog has for the scenario's causes (safe or not), as planned ops."""
    ctx = scenario.network.context()
    out = []
    for pf in scenario.faults:
        for fx in pf.placement.fixes:
            ops = {r: [render_op(o, ctx) for o in fx.ops.get(r, ())] for r in scenario.roles}
            out.append(
                AppliedFix(pf.fault.id, pf.placement.on, fx, {r: o for r, o in ops.items() if o})
            )
    return out


def check(state: ExerciseState, scenario: Scenario, sealed: dict[str, Any]) -> ScenarioRun:
    """Attach to the real lab as it is, diagnose it, diff it against the healthy state
    recorded by ``new`` (every catalog fix of the causes may leave its settings changed)
    and let the security judge read the state against that baseline."""
    provider = provider_for(state.provider, state.provider_options)
    run = new_run(provider, scenario)
    run.base = sealed.get("baseline") or {}
    run.fixes = all_fixes(scenario)
    try:
        return run_steps(run, CHECK)
    finally:
        provider.close()
