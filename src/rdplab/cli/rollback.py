"""rdplab rollback: restore the state before the last ``rdplab fix``, from the journal.

The inverse ops the fix journaled (the agent's registry backups, the firewall rules,
services and hosts entries as they were), newest first, one batch per machine; then those
entries leave the journal, so a second rollback undoes the fix before."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from rdplab.catalog.base import ROLES
from rdplab.cli.app import EXIT_OK, app, err, fail, out
from rdplab.cli.machines import InstallAgentOpt, InventoryOpt, select
from rdplab.errors import RdplabError


@app.command()
def rollback(
    inventory: InventoryOpt = None,
    install_agent: InstallAgentOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Undo the last fix on the inventory's machines (or a fix that was cut short).

    Exit 0 when undone (or nothing to undo), 2 on an error."""
    from rdplab.providers.inventory import InventoryProvider

    if inventory is None:
        fail("rollback works on real machines: --inventory FILE (the sim starts fresh each run)")
    try:
        target = select(inventory, None, None, install_agent=install_agent)
    except RdplabError as exc:
        fail(exc)
    provider = target.provider
    assert isinstance(provider, InventoryProvider)
    try:
        fixes = provider.fixes()
        if not fixes:
            doc: dict[str, Any] = {"ok": True, "fix": None, "finished": None, "ops": {}}
            doc.update(cannot_undo=[], fixes_left=0)
            if as_json:
                sys.stdout.write(json.dumps(doc, indent=2) + "\n")
            else:
                err.print(f"nothing to roll back: no fix in the journal of {inventory}")
            raise typer.Exit(EXIT_OK)
        tag, finished = fixes[-1]
        ops = {role: provider.rollback(role, tag) for role in ROLES}
    except RdplabError as exc:
        fail(exc)
    finally:
        target.close()
    doc = {
        "ok": True,
        "fix": tag,
        "finished": finished,
        "ops": ops,
        "cannot_undo": list(provider.reset_notes),
        "fixes_left": len(fixes) - 1,
    }
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        state = "" if finished else " (it had been cut short)"
        out.print(
            f"rolled back fix {tag}{state}: "
            + ", ".join(f"{n} op(s) on the {role}" for role, n in ops.items()),
            highlight=False,
        )
        for note in provider.reset_notes:
            out.print(f"[yellow]cannot undo[/] {note}", highlight=False, soft_wrap=True)
        if len(fixes) > 1:
            out.print(f"{len(fixes) - 1} earlier fix(es) remain in the journal")
    raise typer.Exit(EXIT_OK)
