"""rdplab break FAULT: put one fault on a real lab by hand (for trainers preparing a
class). The lab is brought to its baseline first (snapshot restore, journal rollback),
then the fault's break ops run, one batch per machine: the BREAK steps of
``rdplab.scenario``. On an inventory every change is journaled, so ``rdplab down`` puts
the machines back; on Vagrant the next run (or ``rdplab up``) restores the snapshot."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from rdplab.catalog.base import ROLES
from rdplab.cli.app import app, fail, out
from rdplab.cli.machines import DEFAULT_LAB
from rdplab.cli.reallab import InventoryOpt, JsonOpt, RootOpt, WorkerOpt, open_lab, where
from rdplab.errors import RdplabError


@app.command(name="break")
def break_fault(
    fault: Annotated[str, typer.Argument(help="A fault id, see `rdplab list`.")],
    on: Annotated[
        Literal["client", "host"] | None,
        typer.Option("--on", help="Only this machine (default: every role the fault has)."),
    ] = None,
    variant: Annotated[str, typer.Option("--variant", help="A named variant.")] = "default",
    lab_file: Annotated[
        Path, typer.Option(help="Lab file whose machines and network to use.")
    ] = DEFAULT_LAB,
    inventory: InventoryOpt = None,
    root: RootOpt = Path("."),
    worker: WorkerOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Break one fault on the real lab (restored to its baseline first)."""
    from rdplab.lab import fault_scenario
    from rdplab.scenario import BREAK, new_run, run_steps

    try:
        scenario = fault_scenario(lab_file, fault, on, variant)
        lab = open_lab(inventory, root, worker)
    except RdplabError as exc:
        fail(exc)
    try:
        lab.preflight()
        lab.reach()
        run = run_steps(new_run(lab, scenario), BREAK)
    except RdplabError as exc:
        lab.close()
        fail(exc)
    machines: dict[str, str] = {role: where(lab, role) for role in ROLES}
    lab.close()
    if run.error:
        fail(f"{scenario.id}: {run.failed_step}: {run.error}")
    undo = (
        f"rdplab down --inventory {inventory}"
        if inventory is not None
        else "rdplab up (restores the baseline snapshot)"
    )
    if as_json:
        doc = {
            "fault": fault,
            "placed": [pf.label for pf in scenario.faults],
            "ops": {r: [o.to_json() for o in ops] for r, ops in run.break_ops.items()},
            "changes": {r: b.changes for r, b in run.break_results.items()},
            "undo": undo,
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        raise typer.Exit(0)
    out.print(
        f"broke {', '.join(pf.label for pf in scenario.faults)}", highlight=False, soft_wrap=True
    )
    for role, ops in run.break_ops.items():
        result = run.break_results[role]
        out.print(
            f"{role} ({machines[role]}): {result.changes} change(s)",
            highlight=False,
            soft_wrap=True,
        )
        for o in ops:
            out.print(f"   {o}", highlight=False, markup=False, soft_wrap=True)
    out.print(f"undo: {undo}", highlight=False, soft_wrap=True)
    raise typer.Exit(0)
