"""rdplab status: where a real lab stands, read-only (nothing is started or changed).

Vagrant: each machine's state (``vagrant status``) and whether it has its ``baseline``
snapshot. Inventory: each machine's credentials (present or not), whether its WinRM/SSH
port answers, and the ops its rollback journal still holds. Exit 0 when the lab is ready
for a run, 1 when a machine is not, 2 on an error."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from rdplab.catalog.base import ROLES
from rdplab.cli.app import EXIT_FINDINGS, EXIT_OK, app, fail, out
from rdplab.cli.reallab import InventoryOpt, JsonOpt, RootOpt, WorkerOpt, open_lab, where
from rdplab.errors import ProviderError, RdplabError


@app.command()
def status(
    inventory: InventoryOpt = None,
    root: RootOpt = Path("."),
    worker: WorkerOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Show whether the lab's client and host are up and at their baseline."""
    from rdplab.providers.inventory import InventoryProvider
    from rdplab.providers.vagrant import SNAPSHOT, VagrantProvider

    try:
        lab = open_lab(inventory, root, worker)
    except RdplabError as exc:
        fail(exc)
    machines: dict[str, dict[str, Any]] = {}
    try:
        if isinstance(lab, VagrantProvider):
            states = lab.status()
            for role in ROLES:
                vm = lab.vms[role]
                state = states[vm]
                snap = SNAPSHOT in lab.snapshots(vm) if state != "not_created" else False
                machines[role] = {
                    "machine": where(lab, role),
                    "state": state,
                    "baseline_snapshot": snap,
                    "ready": state == "running" and snap,
                }
        elif isinstance(lab, InventoryProvider):
            for role in ROLES:
                entry: dict[str, Any] = {"machine": where(lab, role)}
                for name, check in (
                    ("credentials", lab.check_credentials),
                    ("port", lab.check_port),
                ):
                    try:
                        check(role)
                        entry[name] = "ok"
                    except ProviderError as exc:
                        entry[name] = exc.message
                entry["journal_ops"] = sum(len(e.get("inverse", [])) for e in lab.journal(role))
                entry["ready"] = entry["credentials"] == entry["port"] == "ok"
                machines[role] = entry
    except RdplabError as exc:
        fail(exc)
    finally:
        lab.close()
    ready = all(m["ready"] for m in machines.values())
    if as_json:
        doc = {"ready": ready, "provider": lab.name, "machines": machines}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for name, m in machines.items():
            rest = ", ".join(f"{k}: {v}" for k, v in m.items() if k not in ("machine", "ready"))
            mark = "[green]ready[/]" if m["ready"] else "[red]not ready[/]"
            out.print(f"{name:7s} {mark}  {m['machine']}  {rest}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_OK if ready else EXIT_FINDINGS)
