"""rdplab fix: repair what diagnose finds, journaled, then diagnose again.

The DIAGNOSE steps, then ``plan-fix`` (the fixes for the findings: every safe one, or
those ``--fault``/``--fix`` name; a fix that lowers security only with
``--allow-lower-security``), a confirmation, and ``apply-fix`` plus the verify steps. On
real machines every batch is journaled before it is sent (rdplab.providers.journal), under
one tag per fix, so ``rdplab rollback`` restores the state before it; a fix cut short is
rolled back by the next ``rdplab fix`` before it looks at the machines."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from typing import Annotated, Any

import typer

from rdplab import catalog as cat
from rdplab.catalog.base import ROLES
from rdplab.cli.app import EXIT_FINDINGS, EXIT_OK, app, err, fail, out
from rdplab.cli.diagnose import run_diagnosis
from rdplab.cli.machines import (
    HostAddressOpt,
    HostNameOpt,
    InstallAgentOpt,
    InventoryOpt,
    LabFileOpt,
    PortOpt,
    ScenarioOpt,
    Target,
    select,
)
from rdplab.errors import RdplabError
from rdplab.scenario import AppliedFix, FixChoice, ScenarioRun


def _known_fix_ids() -> set[str]:
    return {fx.id for f in cat.catalog().values() for p in f.placements for fx in p.fixes}


def _check_fix_ids(ids: list[str]) -> None:
    import difflib

    known = _known_fix_ids()
    for fid in ids:
        if fid not in known:
            close = difflib.get_close_matches(fid, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise RdplabError(f"unknown fix id {fid!r} ({hint}known: {', '.join(sorted(known))})")


@app.command()
def fix(
    inventory: InventoryOpt = None,
    lab_file: LabFileOpt = None,
    scenario: ScenarioOpt = None,
    host_name: HostNameOpt = None,
    host_address: HostAddressOpt = None,
    port: PortOpt = None,
    install_agent: InstallAgentOpt = False,
    fault: Annotated[
        list[str] | None, typer.Option("--fault", help="Only the findings of this fault.")
    ] = None,
    fix_id: Annotated[
        list[str] | None, typer.Option("--fix", help="Apply this fix (see diagnose's list).")
    ] = None,
    allow_lower_security: Annotated[
        bool, typer.Option(help="Allow a named fix that lowers security.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the ops; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Apply the fixes for what diagnose finds (safe ones by default), then diagnose again.

    Exit 0 when the machines are healthy afterwards, 1 when findings remain (or nothing
    was applied), 2 on an error."""
    from rdplab.diagnosis import diagnosis_json, print_diagnosis

    try:
        for f in fault or ():
            cat.get(f)
        _check_fix_ids(fix_id or [])
        target = select(inventory, lab_file, scenario, host_name, host_address, port, install_agent)
    except RdplabError as exc:
        fail(exc)
    choice = FixChoice(tuple(fault or ()), tuple(fix_id or ()), allow_lower_security)
    try:
        recovered = recover_interrupted(target) if not dry_run else []
        run = run_diagnosis(target, progress=not as_json)
        if run.error:
            fail(run.error)
        run.fix_choice = choice
        _plan(run)
        before = diagnosis_json(run, target.source)
        if run.refused:
            af = run.refused[0]
            fail(
                f"fix {af.fix.id} ({af.fault} on {af.on}) lowers security: {af.fix.summary}"
                " Add --allow-lower-security to apply it."
            )
        cannot_undo = _cannot_undo(target, run)
        if not as_json:
            print_diagnosis(before, out, "Before")
            for line in recovered:
                out.print(f"[yellow]{line}[/]", highlight=False, soft_wrap=True)
            _print_plan(run, cannot_undo, dry_run)
        if not run.fixes:
            doc = _doc(run, before, None, None, cannot_undo, recovered)
            _finish(doc, as_json, "nothing to fix" if before["ok"] else "no fix was chosen")
        if dry_run:
            _finish(_doc(run, before, None, None, cannot_undo, recovered), as_json, None)
        if not yes:
            try:
                typer.confirm(
                    f"Apply {sum(len(v) for v in run._fix_plan().values())} op(s)?",
                    abort=True,
                    err=True,
                )
            except typer.Abort:
                fail("not confirmed: nothing was changed (pass --yes to skip the question)", 1)
        with (
            err.status("applying the fixes, then diagnosing again")
            if not as_json
            else nullcontext()
        ):
            tag = _apply(target, run)
    finally:
        target.close()
    after = diagnosis_json(run, target.source, after=True)
    doc = _doc(run, before, after, tag, cannot_undo, recovered)
    if not as_json:
        print_diagnosis(after, out, "After")
        if tag:
            out.print(
                f"\nUndo it with: rdplab rollback {' '.join(target.source)}",
                highlight=False,
                soft_wrap=True,
            )
    _finish(doc, as_json, None)


def _plan(run: ScenarioRun) -> None:
    from rdplab.scenario import run_steps, steps

    run_steps(run, steps("plan-fix"))
    if run.error:
        fail(run.error)


def _apply(target: Target, run: ScenarioRun) -> str | None:
    """apply-fix and the verify steps; on real machines under one journal tag (a fix that
    fails half-way is rolled back at once)."""
    from rdplab.providers.inventory import InventoryProvider
    from rdplab.scenario import REPAIR_FOUND, run_steps

    provider = target.provider
    tag = None
    if isinstance(provider, InventoryProvider):
        tag = provider.begin_fix(run.facts)
    run_steps(run, REPAIR_FOUND[1:])
    if isinstance(provider, InventoryProvider):
        if run.failed_step == "apply-fix":
            provider.fix_tag = None
            for role in ROLES:
                provider.rollback(role, tag)
            fail(f"{run.error}; what the fix had changed was rolled back")
        provider.end_fix()
    if run.error:
        fail(run.error)
    return tag


def recover_interrupted(target: Target) -> list[str]:
    """Roll back a fix that never finished (its process died): the journal says so."""
    from rdplab.providers.inventory import InventoryProvider

    provider = target.provider
    if not isinstance(provider, InventoryProvider):
        return []
    lines = []
    for tag, finished in provider.fixes():
        if finished:
            continue
        n = sum(provider.rollback(role, tag) for role in ROLES)
        lines.append(f"an interrupted fix ({tag}) was rolled back first: {n} op(s)")
    return lines


def _cannot_undo(target: Target, run: ScenarioRun) -> list[str]:
    """The ops of the plan that ``rdplab rollback`` could not undo."""
    from rdplab.providers.journal import planned_inverse

    if not target.real:
        return []
    out: list[str] = []
    for role in ROLES:
        ops = run._fix_plan().get(role)
        if ops:
            _, irreversible = planned_inverse(ops, run.facts.get(role))
            out += [f"{role}: {what}" for what in irreversible]
    return out


def _fix_json(af: AppliedFix) -> dict[str, Any]:
    return {
        "fault": af.fault,
        "role": af.on,
        "fix": af.fix.id,
        "risk": af.fix.risk,
        "summary": af.fix.summary,
        "ops": {role: [str(o) for o in ops] for role, ops in af.ops.items()},
    }


def _doc(
    run: ScenarioRun,
    before: dict[str, Any],
    after: dict[str, Any] | None,
    tag: str | None,
    cannot_undo: list[str],
    recovered: list[str],
) -> dict[str, Any]:
    return {
        "ok": bool(after and after["ok"]) or (after is None and before["ok"]),
        "before": before,
        "applied": [_fix_json(af) for af in run.fixes] if after is not None else [],
        "planned": [_fix_json(af) for af in run.fixes],
        "withheld": [_fix_json(af) for af in run.withheld],
        "results": {
            role: [r.to_json() for r in batch.results] for role, batch in run.fix_results.items()
        },
        "after": after,
        "journal": tag,
        "cannot_undo": cannot_undo,
        "recovered": recovered,
    }


def _print_plan(run: ScenarioRun, cannot_undo: list[str], dry_run: bool) -> None:
    if not run.fixes:
        return
    out.print(f"\n[bold]{'Would apply' if dry_run else 'Fixes'}[/]")
    for af in run.fixes:
        tag = "[green]safe[/]" if af.fix.risk == "safe" else "[red]lowers security[/]"
        out.print(
            f"  {af.fix.id} ({tag}) for {af.fault} on {af.on}: {af.fix.summary}", soft_wrap=True
        )
        for role, ops in af.ops.items():
            for o in ops:
                out.print(f"    {role}: {o}", highlight=False, soft_wrap=True)
    for w in run.withheld:
        out.print(
            f"  [yellow]not applied[/] {w.fix.id}: lowers security (--fix {w.fix.id}"
            " --allow-lower-security)"
        )
    for what in cannot_undo:
        out.print(f"  [yellow]rollback cannot undo[/] {what}", highlight=False, soft_wrap=True)


def _finish(doc: dict[str, Any], as_json: bool, message: str | None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    elif message:
        err.print(message)
    raise typer.Exit(EXIT_OK if doc["ok"] else EXIT_FINDINGS)
