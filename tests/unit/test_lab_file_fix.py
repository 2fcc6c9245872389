"""A scenario's own fix in a lab file: the documented shape loads and replaces the catalog's
fixes; every mistake (unknown op, missing or mistyped argument, unknown role, missing
script) stops with file, line and field, like every other lab-file error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rdplab.errors import LabFileError
from rdplab.lab import load_lab
from rdplab.scenario import plan_fixes

REPO = Path(__file__).resolve().parents[2]
BASELINES = REPO / "fixtures" / "baselines"

HEAD = """\
machines:
  client: {baseline: windows-11}
  host: {baseline: windows-server-2022}
scenarios:
  - id: my-rdp-fix
    faults: [{fault: rdp-disabled, variant: policy}]
    fix:
"""
POLICY = r"HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services"
GOOD_OPS = f"""\
      ops:
        host:
          - {{op: reg.delete, args: {{key: '{POLICY}', name: fDenyTSConnections}}}}
          - {{op: hosts.remove, args: {{name: '{{host.name}}'}}}}
      leaves: ['host:registry/*']
"""


def write(tmp_path: Path, fix: str) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(fix), " " * 6))
    return path


def test_custom_ops_replace_the_catalog_fix(tmp_path: Path) -> None:
    lab = load_lab(write(tmp_path, GOOD_OPS), baseline_dir=BASELINES)
    sc = lab.scenarios[0]
    assert sc.fix is not None and sc.fix.origin == f"{tmp_path / 'lab.yaml'}:7"
    chosen, withheld = plan_fixes(sc)
    assert withheld == [] and len(chosen) == 1
    af = chosen[0]
    assert af.origin == sc.fix.origin and af.fix.risk == "unlabelled"
    assert [str(o) for o in af.ops["host"]] == [
        f"reg.delete(key={POLICY!r}, name='fDenyTSConnections')",
        "hosts.remove(name='host.rdplab.test')",  # placeholders filled from the lab's network
    ]
    assert af.fix.leaves == ("host:registry/*",)


def test_script_fix_resolves_next_to_the_lab_file(tmp_path: Path) -> None:
    (tmp_path / "fixes").mkdir()
    (tmp_path / "fixes" / "mine.ps1").write_text("Write-Output 'x'\n")
    lab = load_lab(write(tmp_path, "{script: fixes/mine.ps1, on: host}\n"), baseline_dir=BASELINES)
    fix = lab.scenarios[0].fix
    assert fix is not None and fix.script == tmp_path / "fixes" / "mine.ps1" and fix.on == "host"


BAD = [
    pytest.param(
        "ops:\n  host:\n    - {op: reg.nuke, args: {key: x}}\n",
        10,
        "scenarios[0].fix.ops.host[0].op",
        "unknown op 'reg.nuke'",
        id="unknown-op",
    ),
    pytest.param(
        f"ops:\n  host:\n    - {{op: reg.set, args: {{key: '{POLICY}', name: x, data: 0}}}}\n",
        10,
        "scenarios[0].fix.ops.host[0].args",
        "missing argument 'type'",
        id="missing-argument",
    ),
    pytest.param(
        "ops:\n  host:\n    - {op: reg.set, args: {key: k, name: x, type: REG_DWORD, data: 0.5}}\n",
        10,
        "scenarios[0].fix.ops.host[0].args",
        "argument 'data' has type float",
        id="mistyped-argument",
    ),
    pytest.param(
        "ops:\n  server:\n    - {op: dns.flush, args: {name: a, expect: b}}\n",
        9,
        "scenarios[0].fix.ops.server",
        "unknown role 'server' (roles: client, host)",
        id="unknown-role",
    ),
    pytest.param(
        "ops:\n  host:\n    - {op: hosts.remove, args: {name: '{nope.name}'}}\n",
        10,
        "scenarios[0].fix.ops.host[0].args",
        "no lab value for {nope.name}",
        id="unknown-placeholder",
    ),
    pytest.param(
        "ops:\n  host:\n    - {op: hosts.remove, arg: {name: x}}\n",
        10,
        "scenarios[0].fix.ops.host[0].arg",
        "unknown field",
        id="misspelt-args",
    ),
    pytest.param(
        "{script: fixes/absent.ps1, on: host}\n",
        8,
        "scenarios[0].fix.script",
        "script not found",
        id="missing-script",
    ),
    pytest.param(
        "{script: x.ps1}\n", 7, "scenarios[0].fix", "a script fix needs on:", id="script-no-on"
    ),
    pytest.param("{leaves: []}\n", 7, "scenarios[0].fix", "give either ops", id="neither"),
    pytest.param("ops: {}\n", 8, "scenarios[0].fix.ops", "at least one op", id="no-ops"),
]


@pytest.mark.parametrize(("fix", "line", "field", "message"), BAD)
def test_bad_custom_fix(tmp_path: Path, fix: str, line: int, field: str, message: str) -> None:
    path = write(tmp_path, fix)
    with pytest.raises(LabFileError) as info:
        load_lab(path, baseline_dir=BASELINES)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field), str(err)
    assert message in str(err)


def test_bad_custom_fix_on_the_command_line(tmp_path: Path) -> None:
    """As a user meets it: one line naming file, line and field, exit code 2."""
    import subprocess
    import sys

    path = write(tmp_path, "ops:\n  host:\n    - {op: reg.nuke, args: {}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rdplab", "run", "--lab-file", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert f"{path}:10: scenarios[0].fix.ops.host[0].op: unknown op 'reg.nuke'" in proc.stderr
    assert "Traceback" not in proc.stderr
