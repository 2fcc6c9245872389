"""rdplab up: bring a real lab up and to its baseline, before a run or a class.

Vagrant: ``vagrant up`` for a machine that is not running (its output streamed), the
``baseline`` snapshot restored or saved, the agent checked. Inventory: both machines
contacted, the agent checked (installed when missing), a journal left by an interrupted
run rolled back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from rdplab.catalog.base import ROLES
from rdplab.cli.app import app, fail, out
from rdplab.cli.reallab import InventoryOpt, JsonOpt, RootOpt, WorkerOpt, open_lab, progress
from rdplab.errors import RdplabError


@app.command()
def up(
    inventory: InventoryOpt = None,
    root: RootOpt = Path("."),
    worker: WorkerOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Bring the lab's client and host up, at their baseline, agent in place."""
    from rdplab.providers.inventory import InventoryProvider

    try:
        lab = open_lab(inventory, root, worker)
    except RdplabError as exc:
        fail(exc)
    try:
        lab.preflight()
        lab.reach()
        undone = {}
        if isinstance(lab, InventoryProvider):
            for role in ROLES:
                if lab.journal(role):
                    progress(f"rdplab: {role}: rolling back what an earlier run left")
                undone[role] = lab.rollback(role)
        machines = {
            role: {"agent": lab.agent_status.get(role, "?"), "rolled_back_ops": undone.get(role, 0)}
            for role in ROLES
        }
    except RdplabError as exc:
        fail(exc, 2)
    finally:
        lab.close()
    if as_json:
        json.dump({"ok": True, "provider": lab.name, "machines": machines}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for role, m in machines.items():
            extra = f", {m['rolled_back_ops']} op(s) rolled back" if m["rolled_back_ops"] else ""
            out.print(f"{role:7s} up: {m['agent']}{extra}", highlight=False, soft_wrap=True)
        out.print(f"lab up ({lab.runs_on})", highlight=False, soft_wrap=True)
    raise typer.Exit(0)
