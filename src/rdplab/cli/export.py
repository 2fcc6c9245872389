"""rdplab export: fixes as standalone Windows PowerShell 5.1 remediation scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rdplab import catalog as cat
from rdplab.cli.app import app, fail, out
from rdplab.errors import RdplabError

EPILOG = """\
Each script is named DIR/<fault>--<fix-id>.ps1 (DIR/<scenario>--custom.ps1 for a lab
file's own fix) and runs on the machine the fix is for, elevated, in Windows PowerShell 5.1,
with no Python and no rdplab on that machine.

-WhatIf: the script prints every op it would run ("What if: Performing the operation
...") and changes nothing: no registry key, no backup folder, no transcript. -Confirm asks
before each op.

-AllowLowerSecurity: a fix labelled lowers-security (for example AllowEncryptionOracle=2,
AllowCertRevocationCheck=0, client AuthenticationLevel=0) is refused with exit code 2
unless this switch is given.

-BackupFolder DIR: where the reg export backups of every key it changes and the transcript
go (default C:\\ProgramData\\rdplab\\remediation\\<name>-<UTC time>). On the first failing
op everything the script did is rolled back and it exits 1. Get-Help .\\SCRIPT.ps1 -Full
shows the fault id, fix id, lab version, ops and sources.
"""


@app.command(epilog=EPILOG)
def export(
    fault: Annotated[
        str | None, typer.Argument(help="A fault id (see `rdplab list`); or use --all.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Folder to write the scripts to.")
    ] = None,
    fix: Annotated[
        str | None, typer.Option("--fix", help="Only this fix of FAULT (default: each fix).")
    ] = None,
    all_faults: Annotated[
        bool, typer.Option("--all", help="Every fix of every fault in the catalog.")
    ] = False,
    lab_file: Annotated[
        Path | None,
        typer.Option(
            "--lab-file",
            help="Take names, addresses and port from this lab file's network; with"
            " --scenario, export that scenario's own op fix.",
        ),
    ] = None,
    scenario: Annotated[
        str | None, typer.Option("--scenario", help="A scenario of --lab-file with its own fix.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what was written as one JSON array.")
    ] = False,
) -> None:
    """Write remediation scripts (Windows PowerShell 5.1) for fixes."""
    from rdplab import export as ex
    from rdplab.lab import load_lab

    chosen = [bool(fault), all_faults, bool(scenario)]
    if sum(chosen) != 1:
        fail("give exactly one of FAULT, --all or --scenario (with --lab-file)")
    if output is None:
        fail("missing -o DIR: the folder to write the scripts to")
    if fix and not fault:
        fail("--fix goes with a FAULT")
    if scenario and lab_file is None:
        fail("--scenario needs --lab-file")
    try:
        network = None
        exports: list[ex.Export] = []
        if lab_file is not None:
            lab = load_lab(lab_file)
            network = lab.scenarios[0].network
            if scenario:
                sc = next((s for s in lab.scenarios if s.id == scenario), None)
                if sc is None:
                    raise RdplabError(
                        f"{lab_file}: no scenario {scenario!r}"
                        f" (scenarios: {', '.join(s.id for s in lab.scenarios)})"
                    )
                if sc.fix is None:
                    raise RdplabError(f"{lab_file}: scenario {scenario} has no fix of its own")
                if sc.fix.script is not None:
                    raise RdplabError(
                        f"{lab_file}: scenario {scenario}'s fix is already a script"
                        f" ({sc.fix.script}); only op fixes are exported"
                    )
                exports = ex.exports_for_scenario(
                    sc.fix.fix.ops,
                    sc.id,
                    sc.fix.fix,
                    [pf.fault for pf in sc.faults],
                    sc.fix.origin,
                    sc.network,
                )
        if fault:
            exports = ex.catalog_exports(cat.get(fault), fix, network)
        elif all_faults:
            exports = ex.all_exports(network)
        paths = ex.write(exports, output)
    except RdplabError as exc:
        fail(exc)
    except OSError as exc:
        fail(f"{output}: cannot write: {exc.strerror}")
    if as_json:
        rows = [
            {
                "file": str(p),
                "fault": e.fault,
                "fix": e.fix.id,
                "risk": e.fix.risk,
                "machine": e.role,
                "ops": [o.to_json() for o in e.ops],
            }
            for e, p in zip(exports, paths, strict=True)
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    for e, p in zip(exports, paths, strict=True):
        tag = (
            " [red](lowers security: needs -AllowLowerSecurity)[/]"
            if e.fix.risk == ("lowers-security")
            else ""
        )
        out.print(f"{p}  ({e.role}, {len(e.ops)} op(s)){tag}", highlight=False)
    out.print(f"{len(paths)} script(s) written to {output}", highlight=False)
