"""agent.ps1 is its parts, assembled; subsets of the parts carry exactly the ops they name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell

from rdplab.agent import agent_source
from rdplab.agent.assemble import (
    AGENT_FILE,
    PARTS,
    agent_script,
    assemble,
    op_parts,
    parts_for_ops,
)
from rdplab.ops import VOCABULARY

PARTS_DIR = AGENT_FILE.parent / "parts"


def test_agent_ps1_is_the_assembled_parts() -> None:
    assert AGENT_FILE.read_bytes() == agent_script().encode("utf-8"), (
        "src/rdplab/agent/agent.ps1 differs from its parts: run python -m rdplab.agent.assemble"
    )
    assert agent_source() == AGENT_FILE.read_bytes()  # what installers upload and hash


def test_every_part_file_is_declared_once() -> None:
    names = [p.name for p in PARTS]
    assert len(names) == len(set(names))
    assert sorted(f.name for f in PARTS_DIR.glob("*.ps1")) == sorted(p.file for p in PARTS)


def test_every_op_of_the_vocabulary_has_one_part() -> None:
    table = op_parts()
    assert set(table) == set(VOCABULARY)
    assert table["reg.set"].name == "registry"
    assert table["fw.rule.set"].name == "firewall"
    assert table["licensing.clear"].name == "licensing"


def test_parts_for_ops_is_the_closure_in_agent_order() -> None:
    names = [p.name for p in parts_for_ops(["svc.restart", "reg.set"])]
    assert names == ["common", "registry", "services", "batch"]
    assert [p.name for p in parts_for_ops(["licensing.clear"], batch=False)] == [
        "common",
        "registry",
        "licensing",
    ]


def test_parts_for_ops_names_an_unknown_op() -> None:
    with pytest.raises(KeyError, match=r"no agent part implements op 'reg\.frobnicate'"):
        parts_for_ops(["reg.set", "reg.frobnicate"])


@pytest.mark.parametrize("op", sorted(VOCABULARY))
def test_a_subset_parses_and_registers_only_its_ops(op: str) -> None:
    parts = parts_for_ops([op])
    body = assemble(parts)
    tree = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language())).parse(
        body.encode()
    )
    assert not tree.root_node.has_error
    registered = {o for p in parts for o in p.ops()}
    assert op in registered
    assert registered <= set(VOCABULARY)
    assert "function Invoke-Batch" in body and "function Invoke-Main" not in body
    assert "exit $script:ExitCode" not in body  # only the agent's main part exits


def _assemble_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rdplab.agent.assemble", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_assemble_check_passes_on_the_repository() -> None:
    r = _assemble_cli("--check")
    assert r.returncode == 0, r.stderr
    assert "up to date" in r.stdout


def test_assemble_check_fails_on_a_stale_file_and_writing_fixes_it(tmp_path: Path) -> None:
    out = tmp_path / "agent.ps1"
    out.write_text("# agent.ps1 from an older rdplab\n")
    r = _assemble_cli("--check", "--output", str(out))
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"{out}: out of date with its parts; run python -m rdplab.agent.assemble"
    )
    r = _assemble_cli("--output", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == agent_script().encode("utf-8")
    assert _assemble_cli("--check", "--output", str(out)).returncode == 0


def test_assemble_reports_an_unwritable_target_in_one_line(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "agent.ps1"
    r = _assemble_cli("--output", str(target))
    assert r.returncode == 2
    assert r.stderr.strip().startswith(f"{target}: cannot write:")
    assert "Traceback" not in r.stderr
