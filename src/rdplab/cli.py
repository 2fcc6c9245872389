"""The rdplab command line: the catalog for people and for scripts.

rdplab list [--json]      every fault: id, roles, symptom, fix risk
rdplab explain FAULT      one fault's whole story, for trainees
rdplab run [--lab-file]   run a lab file's scenarios on the sim provider, with progress
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rdplab import catalog as cat
from rdplab.errors import RdplabError

app = typer.Typer(
    name="rdplab",
    help="Break-fix lab for Remote Desktop error 0x904 (extended 0x7).",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


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
    for col in ("id", "roles", "fails at", "fix risk"):
        table.add_column(col, no_wrap=True)
    table.add_column("title")
    for f in faults:
        risky = any(fx.risk == "lowers-security" for p in f.placements for fx in p.fixes)
        risk = "safe (+ workaround that lowers security)" if risky else "safe"
        table.add_row(f.id, ", ".join(f.roles), f.symptom.stage, risk, f.title)
    out.print(table)


@app.command()
def explain(fault: Annotated[str, typer.Argument(help="A fault id, see `rdplab list`.")]) -> None:
    """Explain one fault: symptom, cause, evidence, fix, sources."""
    try:
        f = cat.get(fault)
    except RdplabError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
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
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(exc.exit_code) from None
    chosen = [s for s in lab.scenarios if not scenario or s.id in scenario]
    unknown = set(scenario or ()) - {s.id for s in lab.scenarios}
    if unknown:
        err.print(f"[red]error:[/] {lab_file}: no scenario {', '.join(sorted(unknown))}")
        raise typer.Exit(2)
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
                and not r.findings_after
                and r.connection_after is not None
                and r.connection_after.ok
                and not r.unexpected_diff
                and all(b.changes == 0 for b in r.fix_again_results.values())
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
                "[green]ok[/]" if ok else f"[red]FAIL[/] {r.error or ''}",
                ", ".join(f"{f.fault}@{f.role}" for f in r.findings) or "-",
                (r.connection.failed_stage or "-") if r.connection else "-",
                str(sum(len(v) for v in r.fix_ops().values())),
            )
        out.print(table)
    raise typer.Exit(1 if failed else 0)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
