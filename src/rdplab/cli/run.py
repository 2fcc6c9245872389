"""rdplab run [--lab-file F]: a lab file's scenarios on the sim provider, with progress."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rdplab.cli.app import app, fail, out
from rdplab.errors import RdplabError


@app.command()
def run(
    lab_file: Annotated[Path, typer.Option(help="Lab definition (YAML).")] = Path(
        "labs/rdp-0x904.yaml"
    ),
    scenario: Annotated[
        list[str] | None, typer.Option("--scenario", "-s", help="Only these ids.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Run a lab file on the sim provider and summarise each scenario."""
    from rdplab.lab import load_lab
    from rdplab.providers import get_provider
    from rdplab.scenario import run_scenario

    try:
        lab = load_lab(lab_file)
    except RdplabError as exc:
        fail(exc)
    chosen = [s for s in lab.scenarios if not scenario or s.id in scenario]
    unknown = set(scenario or ()) - {s.id for s in lab.scenarios}
    if unknown:
        fail(f"{lab_file}: no scenario {', '.join(sorted(unknown))}")
    provider = get_provider("sim")
    rows = []
    failed = 0
    with out.status("running scenarios...") as status:
        for i, sc in enumerate(chosen, 1):
            status.update(f"[{i}/{len(chosen)}] {sc.id}")
            r = run_scenario(provider, sc)
            ok = (
                not r.error
                and {(f.fault, f.role) for f in r.findings} == sc.expected()
                and (
                    r.skipped is not None
                    or (
                        not r.findings_after
                        and r.connection_after is not None
                        and r.connection_after.ok
                        and not r.unexpected_diff
                        and all(b.changes == 0 for b in r.fix_again_results.values())
                        and (sc.allow_lowers_security or not r.weakened)
                    )
                )
            )
            failed += not ok
            rows.append((sc, r, ok))
    if as_json:
        sys.stdout.write(
            json.dumps(
                [
                    {
                        "scenario": sc.id,
                        "ok": ok,
                        "findings": [f.to_json() for f in r.findings],
                        "failed_stage": r.connection.failed_stage if r.connection else None,
                        "error": r.error,
                        "skipped": r.skipped,
                        "weakened": [w.to_json() for w in r.weakened],
                        "fix_origin": sc.fix.origin if sc.fix else "catalog",
                    }
                    for sc, r, ok in rows
                ],
                indent=2,
            )
            + "\n"
        )
    else:
        table = Table(title=f"{lab.name}: {len(rows)} scenario(s) on sim (simulated twins)")
        table.add_column("scenario", no_wrap=True)
        for col in ("result", "findings", "failed at", "fix ops"):
            table.add_column(col)
        for sc, r, ok in rows:
            table.add_row(
                sc.id,
                ("[green]ok[/]" if ok else f"[red]FAIL[/] {r.error or ''}")
                + (f" [yellow]fix skipped[/]: {r.skipped}" if r.skipped else ""),
                ", ".join(f"{f.fault}@{f.role}" for f in r.findings) or "-",
                (r.connection.failed_stage or "-") if r.connection else "-",
                str(sum(len(v) for v in r.fix_ops().values())),
            )
        out.print(table)
    raise typer.Exit(1 if failed else 0)
