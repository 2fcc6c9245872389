"""rdplab down: put a real lab away.

Vagrant: ``vagrant halt`` of both machines (their ``baseline`` snapshots stay, so the
next ``up`` restores instead of rebuilding), or with ``--destroy`` ``vagrant destroy``
(asks first unless ``--yes``). Inventory: the machines are not yours to stop: everything
the lab changed on them is rolled back from the journal (a break left by ``rdplab
break``, a run that was interrupted), and what cannot be undone is named."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rdplab.catalog.base import ROLES
from rdplab.cli.app import app, fail, out
from rdplab.cli.reallab import InventoryOpt, JsonOpt, RootOpt, WorkerOpt, open_lab, progress
from rdplab.errors import RdplabError


@app.command()
def down(
    inventory: InventoryOpt = None,
    root: RootOpt = Path("."),
    worker: WorkerOpt = 0,
    destroy: Annotated[
        bool, typer.Option("--destroy", help="Vagrant: destroy the VMs (not just halt).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before --destroy.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Halt (or destroy) the Vagrant lab; roll an inventory lab back to its baseline."""
    from rdplab.providers.inventory import InventoryProvider
    from rdplab.providers.vagrant import VagrantProvider

    try:
        lab = open_lab(inventory, root, worker)
    except RdplabError as exc:
        fail(exc)
    result: dict[str, object] = {"provider": lab.name}
    try:
        if isinstance(lab, VagrantProvider):
            if destroy and not yes:
                names = " and ".join(lab.vms.values())
                typer.confirm(f"destroy {names} (their snapshots go too)?", abort=True)
            lab.status()  # the binary, the Vagrantfile, the machines: one clear line if not
            lab.teardown = "destroy" if destroy else "halt"
            result["done"] = lab.teardown
            result["machines"] = dict(lab.vms)
        elif isinstance(lab, InventoryProvider):
            if destroy:
                fail("--destroy is for Vagrant VMs; an inventory's machines are not rdplab's")
            undone = {}
            for role in ROLES:
                if lab.journal(role):
                    progress(f"rdplab: {role}: rolling back the journal")
                undone[role] = lab.rollback(role)
            result["done"] = "rolled back"
            result["rolled_back_ops"] = undone
            result["cannot_undo"] = list(lab.reset_notes)
        lab.close()  # vagrant: halt or destroy happens here, with progress
    except RdplabError as exc:
        if isinstance(lab, VagrantProvider):
            lab.teardown = "none"
        lab.close()
        fail(exc)
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif result["done"] == "rolled back":
        ops = result["rolled_back_ops"]
        assert isinstance(ops, dict)
        for role in ROLES:
            out.print(f"{role:7s} {ops[role]} op(s) rolled back", highlight=False, soft_wrap=True)
        for note in result["cannot_undo"]:  # type: ignore[attr-defined]
            out.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    else:
        out.print(f"lab {'destroyed' if destroy else 'halted'}", highlight=False, soft_wrap=True)
    raise typer.Exit(0)
