"""rdplab export: standalone remediation scripts built from the agent's own parts.

``rdplab export --all`` runs as a user runs it (a subprocess into tmp_path); every script
parses with tree-sitter-powershell, is Windows PowerShell 5.1 (the checkers of
test_powershell.py), calls only 5.1 cmdlets and parameters, carries exactly its fix's op
batch (read back out of the script) and every registry value the fix touches, and has the
wrapper the issue asks for (ShouldProcess, backups, transcript, rollback exit code,
-AllowLowerSecurity refusal, help with fault id, fix id, lab version and sources). No
PowerShell runs here: what the script does on Windows is read from its text, and the
loopback suites run it through the emulator (tests/loopback/test_export_loopback.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_powershell import (
    defined_functions,
    parse,
    ps7_constructs,
    ps51_call_problems,
    syntax_problems,
    text,
    walk,
)
from typer.testing import CliRunner

from rdplab import __version__
from rdplab import catalog as cat
from rdplab import export as ex
from rdplab.agent.assemble import PARTS, parts_for_ops
from rdplab.cli import app
from rdplab.network import Network
from rdplab.ops import render_op

REPO = Path(__file__).resolve().parents[2]
ALL_EXPORTS = ex.all_exports()
#: the Windows PowerShell scripts (a router's fix is a shell script: test_export_router.py)
EXPORTS = [e for e in ALL_EXPORTS if e.role != "router"]
IDS = [e.name for e in EXPORTS]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("export")
    proc = subprocess.run(
        [sys.executable, "-m", "rdplab", "export", "--all", "-o", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [Path(r["file"]).name for r in rows] == [e.filename for e in ALL_EXPORTS]
    return {Path(r["file"]).stem: Path(r["file"]) for r in rows}


def test_export_all_writes_one_script_per_fault_and_fix(exported: dict[str, Path]) -> None:
    want = {
        f"{f.id}--{fx.id}" for f in cat.catalog().values() for p in f.placements for fx in p.fixes
    }
    # a fix on two machines is one script per machine: <fault>--<fix>--<role>
    assert {name.rsplit("--", 1)[0] if name.count("--") > 1 else name for name in exported} == want
    windows = [p for p in exported.values() if p.suffix == ".ps1"]
    assert all(p.read_bytes().startswith(b"\xef\xbb\xbf") for p in windows)  # BOM


@pytest.mark.parametrize("export", EXPORTS, ids=IDS)
def test_script_parses_and_is_windows_powershell_51(
    exported: dict[str, Path], export: ex.Export
) -> None:
    path = exported[export.name]
    source = path.read_bytes()
    assert syntax_problems(path, source) == []
    assert [str(f) for f in ps7_constructs(source)] == []
    assert ps51_call_problems(source, defined_functions(source)) == []


@pytest.mark.parametrize("export", EXPORTS, ids=IDS)
def test_script_carries_exactly_its_fix_batch(exported: dict[str, Path], export: ex.Export) -> None:
    """Read the batch back out of the written file and compare with the catalog's fix."""
    text_ = exported[export.name].read_text(encoding="utf-8-sig")
    fault = cat.get(export.fault)
    fix = next(fx for p in fault.placements for fx in p.fixes if fx.id == export.fix.id)
    ctx = ex.network_for(fault, Network()).context()
    want = [render_op(o, ctx) for o in fix.ops[export.role]]
    assert ex.read_batch(text_) == want


@pytest.mark.parametrize("export", EXPORTS, ids=IDS)
def test_script_contains_every_registry_value_its_fix_touches(
    exported: dict[str, Path], export: ex.Export
) -> None:
    text_ = exported[export.name].read_text(encoding="utf-8-sig")
    batch_text = text_.split(ex.BATCH_BEGIN, 1)[1]
    for op in export.ops:
        if op.name.startswith("reg."):
            assert json.dumps(op.args["key"]) in batch_text, op
            if "name" in op.args:
                assert json.dumps(op.args["name"]) in batch_text, op
                # and in words, in the help and in what -WhatIf says
                assert text_.count(f"{op.args['key']}\\{op.args['name']}") >= 2, op
        if op.name == "licensing.clear":
            assert "HKLM\\SOFTWARE\\Microsoft\\MSLicensing" in text_


@pytest.mark.parametrize("export", EXPORTS, ids=IDS)
def test_script_uses_the_agent_parts_not_a_copy(
    exported: dict[str, Path], export: ex.Export
) -> None:
    text_ = exported[export.name].read_text(encoding="utf-8-sig")
    parts = parts_for_ops([o.name for o in export.ops])
    for part in parts:
        assert part.source() in text_.replace("\r\n", "\n"), part.name
    unused = [p for p in PARTS if p not in parts and p.name in ("facts", "main")]
    for part in unused:
        assert part.source() not in text_.replace("\r\n", "\n")


@pytest.mark.parametrize("export", EXPORTS, ids=IDS)
def test_script_wrapper(exported: dict[str, Path], export: ex.Export) -> None:
    text_ = exported[export.name].read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    tree = parse(text_.encode())
    # the first statement: [CmdletBinding(SupportsShouldProcess)] param(...) after the help
    assert re.search(r"#>\n\[CmdletBinding\(SupportsShouldProcess = \$true\)\]\nparam\(", text_)
    params = [
        text(n) for n in walk(tree.root_node) if n.type == "variable" and n.parent is not None
    ]
    assert "$BackupFolder" in params and "$AllowLowerSecurity" in params
    assert "$Cmdlet.ShouldProcess(" in text_
    assert "Start-Transcript" in text_ and "Stop-Transcript" in text_
    # reg export backups land in the folder: set after the parts' own default
    assert text_.rindex("$script:BackupDir = 'C:\\ProgramData") < text_.index(
        "$script:BackupDir = $Folder"
    )
    assert "function Backup-RegKey" not in text_ or "$script:BackupDir" in text_
    assert "Invoke-Batch" in text_ and "return 1" in text_ and "exit $script:RdplabExit" in text_
    help_ = text_.split("#>", 1)[0]
    assert f"rdplab-fault: {export.fault}" in help_
    assert f"rdplab-fix: {export.fix.id}" in help_
    assert f"rdplab-version: {__version__}" in help_
    for source in export.sources:
        assert source in help_
    for keyword in (".SYNOPSIS", ".DESCRIPTION", ".PARAMETER BackupFolder", ".EXAMPLE"):
        assert keyword in help_
    risky = export.fix.risk == "lowers-security"
    assert ("if ($true -and -not $AllowLower)" in text_) == risky
    assert ("if ($false -and -not $AllowLower)" in text_) == (not risky)


def test_wrapper_variables_do_not_collide_with_the_parts() -> None:
    """The script's parameters live in script scope, where the parts keep their state."""
    script_vars = {m.lower() for p in PARTS for m in re.findall(r"\$script:(\w+)", p.source())}
    assert {"backupfolder", "allowlowersecurity"} & script_vars == set()


def _rdplab(*args: str) -> subprocess.CompletedProcess[str]:
    """In process (typer's runner): the subprocess runs are the --all export above and the
    bad-input case below; each costs seconds of interpreter start-up."""
    res = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)


def test_export_one_fault_one_fix(tmp_path: Path) -> None:
    proc = _rdplab("export", "rdp-disabled", "--fix", "allow-connections", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["rdp-disabled--allow-connections.ps1"]


def test_export_takes_the_lab_files_network(tmp_path: Path) -> None:
    lab = tmp_path / "lab.yaml"
    lab.write_text(
        "machines:\n  client: {baseline: windows-11}\n  host: {baseline: windows-server-2022}\n"
        "network: {host_name: rds01.corp.example, host_address: 10.1.2.3}\n"
        "scenarios:\n  - {id: healthy, faults: []}\n"
    )
    out = tmp_path / "out"
    proc = _rdplab("export", "dns-stale-record", "--lab-file", str(lab), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    script = (out / "dns-stale-record--correct-resolution.ps1").read_text("utf-8-sig")
    assert [o.args for o in ex.read_batch(script)] == [
        {"name": "rds01.corp.example"},
        {"name": "rds01.corp.example", "expect": "10.1.2.3"},
    ]


def test_export_a_lab_files_own_fix(tmp_path: Path) -> None:
    lab = str(REPO / "labs" / "custom-fixes.yaml")
    proc = _rdplab("export", "--lab-file", lab, "--scenario", "my-rdp-fix", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    script = (tmp_path / "my-rdp-fix--custom.ps1").read_text("utf-8-sig")
    assert [o.name for o in ex.read_batch(script)] == ["reg.delete", "reg.set"]
    assert "labs/custom-fixes.yaml:" in script  # where the fix came from


CUSTOM = str(REPO / "labs" / "custom-fixes.yaml")
BAD = [
    (["-o", "X"], "give exactly one of FAULT, --all or --scenario"),
    (["rdp-disabled", "--all", "-o", "X"], "give exactly one of"),
    (["rdp-disabled"], "missing -o DIR"),
    (["--all", "--fix", "x", "-o", "X"], "--fix goes with a FAULT"),
    (["rdp-disabld", "-o", "X"], "did you mean 'rdp-disabled'?"),
    (["rdp-disabled", "--fix", "nope", "-o", "X"], "has no fix 'nope' (fixes: allow-connections)"),
    (["--scenario", "x", "-o", "X"], "--scenario needs --lab-file"),
    (["--lab-file", CUSTOM, "--scenario", "my-script-fix", "-o", "X"], "only op fixes"),
    (["--lab-file", CUSTOM, "--scenario", "healthy", "-o", "X"], "has no fix of its own"),
    (["--lab-file", CUSTOM, "--scenario", "nope", "-o", "X"], "no scenario 'nope'"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[m for _, m in BAD])
def test_export_bad_input_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(tmp_path / "out") if a == "X" else a for a in args]
    proc = _rdplab("export", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_export_bad_input_as_a_user_meets_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rdplab", "export", "rdp-disabld", "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown fault id 'rdp-disabld'")
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def test_export_help_explains_whatif_and_allowlowersecurity() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rdplab", "export", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0
    flat = " ".join(proc.stdout.split())
    assert "-WhatIf: the script prints every op it would run" in flat
    assert "changes nothing" in flat
    assert "-AllowLowerSecurity: a fix labelled lowers-security" in flat
    assert "is refused with exit code 2 unless this switch is given" in flat
