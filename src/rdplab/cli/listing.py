"""rdplab list [--json]: every fault: id, roles, symptom, fix risk."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from rdplab import catalog as cat
from rdplab.cli.app import app, out


@app.command("list")
def list_faults(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the catalog as one JSON array.")
    ] = False,
) -> None:
    """List the fault catalog."""
    faults = cat.catalog().values()
    if as_json:
        sys.stdout.write(json.dumps([f.to_json() for f in faults], indent=2) + "\n")
        return
    table = Table(title="rdplab fault catalog", show_lines=False)
    # ids are what users type: never cut, whatever the terminal's width
    table.add_column("id", no_wrap=True, min_width=max(len(f.id) for f in faults))
    table.add_column("roles", overflow="fold")
    table.add_column("fails at", no_wrap=True)
    table.add_column("fix risk", overflow="fold")
    table.add_column("title")
    for f in faults:
        risky = any(fx.risk == "lowers-security" for p in f.placements for fx in p.fixes)
        risk = "safe (+ workaround that lowers security)" if risky else "safe"
        table.add_row(f.id, ", ".join(f.roles), f.symptom.stage, risk, f.title)
    out.print(table)
