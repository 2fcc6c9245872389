"""rdplab train FAULT: the fault broken, seen, found, fixed and proven on the sim lab."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rdplab import catalog as cat
from rdplab.cli.app import app, fail, out
from rdplab.errors import RdplabError


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
        fail(exc)
    scenario = next((s for s in lab.scenarios if [pf.fault.id for pf in s.faults] == [f.id]), None)
    if scenario is None:
        fail(f"{lab_file}: no scenario with only {f.id} in it")
    r = run_scenario(get_provider("sim"), scenario)
    if r.error:
        fail(f"scenario {scenario.id} stopped at {r.failed_step}: {r.error}", 1)
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
