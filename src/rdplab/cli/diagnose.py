"""rdplab diagnose: what is wrong with a pair of machines, read-only.

On real machines (``--inventory``) it gathers each machine's facts (one call each), runs
every detector and probes the connection live; on the sim (``--lab-file F --scenario
ID``) it breaks the scenario on fresh twins first. The DIAGNOSE steps of
``rdplab.scenario``, composed: nothing is restored, changed or journaled."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from rdplab.cli.app import EXIT_FINDINGS, EXIT_OK, app, err, fail, out
from rdplab.cli.machines import (
    HostAddressOpt,
    HostNameOpt,
    InstallAgentOpt,
    InventoryOpt,
    LabFileOpt,
    PortOpt,
    ScenarioOpt,
    Target,
    select,
)
from rdplab.errors import RdplabError
from rdplab.scenario import ScenarioRun


def run_diagnosis(target: Target, progress: bool = False) -> ScenarioRun:
    """The DIAGNOSE steps on the target: as they are (real), or after BREAK (sim).
    ``progress``: a spinner on stderr while it runs (on a terminal only)."""
    from rdplab.scenario import BREAK, DIAGNOSE, DIAGNOSE_AS_IS, new_run, run_steps

    run = new_run(target.provider, target.scenario)
    what = (
        "checking the agents, gathering both machines' facts, probing the connection"
        if target.real
        else f"breaking {target.scenario.id} on fresh twins, then diagnosing"
    )
    with err.status(what) if progress else nullcontext():
        return run_steps(run, DIAGNOSE_AS_IS if target.real else (*BREAK, *DIAGNOSE))


@app.command()
def diagnose(
    inventory: InventoryOpt = None,
    lab_file: LabFileOpt = None,
    scenario: ScenarioOpt = None,
    host_name: HostNameOpt = None,
    host_address: HostAddressOpt = None,
    port: PortOpt = None,
    install_agent: InstallAgentOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write an HTML page.")] = None,
) -> None:
    """Find what breaks Remote Desktop between a client and a host; change nothing.

    Exit 0 healthy, 1 findings (or the connection fails), 2 error."""
    from rdplab.diagnosis import diagnosis_html, diagnosis_json, print_diagnosis

    try:
        target = select(inventory, lab_file, scenario, host_name, host_address, port, install_agent)
    except RdplabError as exc:
        fail(exc)
    try:
        for warning in unfinished_fixes(target):
            err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        run = run_diagnosis(target, progress=not as_json)
    finally:
        target.close()
    if run.error:
        fail(run.error)
    doc = diagnosis_json(run, target.source)
    if html is not None:
        try:
            html.write_text(diagnosis_html(doc), encoding="utf-8")
        except OSError as exc:
            fail(f"{html}: cannot write the page: {exc.strerror or exc}")
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        print_diagnosis(doc, out)
    raise typer.Exit(EXIT_OK if doc["ok"] else EXIT_FINDINGS)


def unfinished_fixes(target: Target) -> list[str]:
    """A fix that was cut short leaves its journal behind: say so (diagnose changes
    nothing; ``rdplab rollback`` or the next ``rdplab fix`` undoes it)."""
    from rdplab.providers.inventory import InventoryProvider

    provider = target.provider
    if not isinstance(provider, InventoryProvider):
        return []
    return [
        f"a fix was cut short ({tag}) and its changes are still on the machines;"
        f" rdplab rollback {' '.join(target.source)} undoes them"
        for tag, finished in provider.fixes()
        if not finished
    ]
