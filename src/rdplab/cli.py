"""The rdplab command line: the catalog for people and for scripts.

rdplab list [--json]      every fault: id, roles, symptom, fix risk
rdplab explain FAULT      one fault's whole story, for trainees
rdplab train FAULT        the fault broken, seen, found, fixed and proven on the sim lab
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
def train(
    fault: Annotated[str, typer.Argument(help="A fault id, see `rdplab list`.")],
    lab_file: Annotated[Path, typer.Option(help="Lab definition (YAML).")] = Path(
        "labs/rdp-0x904.yaml"
    ),
) -> None:
    """Walk through one fault on the sim lab: break, symptom, evidence, fix, proof."""
    from rdplab.lab import load_lab
    from rdplab.providers import get_provider
    from rdplab.scenario import run_scenario

    try:
        f = cat.get(fault)
        lab = load_lab(lab_file)
    except RdplabError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(exc.exit_code) from None
    scenario = next((s for s in lab.scenarios if [pf.fault.id for pf in s.faults] == [f.id]), None)
    if scenario is None:
        err.print(f"[red]error:[/] {lab_file}: no scenario with only {f.id} in it")
        raise typer.Exit(2)
    r = run_scenario(get_provider("sim"), scenario)
    if r.error:
        err.print(f"[red]error:[/] scenario {scenario.id} stopped at {r.failed_step}: {r.error}")
        raise typer.Exit(1)
    out.rule(f"[bold]{f.id}[/]: {f.title}  (scenario {scenario.id}, simulated twins)")
    out.print(f"{f.explanation}\n")
    out.print("[bold]1. The lab breaks it[/]")
    for role, ops in r.break_ops.items():
        for o in ops:
            out.print(f"   {role}: {o}")
    conn = r.connection
    out.print("\n[bold]2. What the user sees[/]")
    if conn is not None:
        for s in conn.stages:
            mark = "[green]ok[/]  " if s.ok else "[red]FAIL[/]"
            out.print(f"   {mark} {s.name:16s} {s.detail}")
        codes = f"error {conn.error_code}, extended {conn.extended_code}"
        out.print(f"   -> {codes if conn.error_code else f.symptom.message}")
    out.print("\n[bold]3. What detection finds[/]")
    for finding in r.findings:
        out.print(f"   {finding.fault} on {finding.role}: {finding.summary}")
        for key, value in finding.evidence.items():
            out.print(f"      {key}: {value}")
    out.print("\n[bold]4. The fix[/]")
    for af in r.fixes:
        tag = "[green]safe[/]" if af.fix.risk == "safe" else "[red]lowers security[/]"
        out.print(f"   {af.fix.id} ({tag}): {af.fix.summary}")
    for role, batch in r.fix_results.items():
        for res in batch.results:
            out.print(f"   {role}: {res.op}: {res.detail}")
    for w in r.withheld:
        out.print(f"   [yellow]not applied[/] {w.fix.id}: lowers security ({w.fix.summary})")
    after = r.connection_after
    out.print("\n[bold]5. Proof[/]")
    out.print(f"   findings after the fix: {len(r.findings_after)}")
    out.print(f"   connection after the fix: {'succeeds' if after and after.ok else 'FAILS'}")
    again = sum(b.changes for b in r.fix_again_results.values())
    out.print(f"   running the fix again changes: {again}")
    out.print(f"   unexpected state changes: {sum(len(v) for v in r.unexpected_diff.values())}")
    out.print("\n[bold]Sources[/]")
    for src in f.sources:
        out.print(f"   - {src}")


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
