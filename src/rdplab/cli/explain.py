"""rdplab explain FAULT: one fault's whole story, for trainees."""

from __future__ import annotations

from typing import Annotated

import typer

from rdplab import catalog as cat
from rdplab.cli.app import app, fail, out
from rdplab.errors import RdplabError


@app.command()
def explain(fault: Annotated[str, typer.Argument(help="A fault id, see `rdplab list`.")]) -> None:
    """Explain one fault: symptom, cause, evidence, fix, sources."""
    try:
        f = cat.get(fault)
    except RdplabError as exc:
        fail(exc)
    out.rule(f"[bold]{f.id}[/]: {f.title}")
    s = f.symptom
    out.print(
        f"[bold]Symptom[/]: error {s.error_code} (extended {s.extended_code}), the connection"
        f" stops at [bold]{s.stage}[/]. {s.message}"
    )
    out.print(f"\n[bold]What is going on[/]\n{f.explanation}\n")
    for p in f.placements:
        label = p.on if p.variant == "default" else f"{p.on}, variant {p.variant}"
        out.print(f"[bold]How the lab breaks it[/] ({label})")
        for role, ops in p.breaks.items():
            for o in ops:
                out.print(f"  {role}: {o}")
        for fx in p.fixes:
            tag = "[green]safe[/]" if fx.risk == "safe" else "[red]lowers security[/]"
            out.print(f"[bold]Fix[/] {fx.id} ({tag}): {fx.summary}")
            for role, ops in fx.ops.items():
                for o in ops:
                    out.print(f"  {role}: {o}")
    out.print("\n[bold]Sources[/]")
    for src in f.sources:
        out.print(f"  - {src}")
