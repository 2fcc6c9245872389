"""Usage mistakes on the command line are one line naming the command and the option,
exit 2, no box and no traceback (as every other rdplab error)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _rdplab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rdplab", *args], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["probe", "127.0.0.1", "--timeout", "0"], "rdplab probe: Invalid value for '--timeout'"),
        (["nope"], "rdplab: No such command 'nope'"),
        (["explain"], "rdplab explain: Missing argument"),
        (["list", "--bogus"], "rdplab list: No such option: --bogus"),
    ],
)
def test_usage_error_is_one_line_exit_2(args: list[str], expected: str) -> None:
    proc = _rdplab(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr and "╭" not in proc.stderr
    assert proc.stdout == ""


def test_help_still_prints_help() -> None:
    proc = _rdplab("--help")
    assert proc.returncode == 0
    assert "diagnose" in proc.stdout
    bare = _rdplab()
    assert bare.returncode == 2
    assert "Usage" in bare.stdout + bare.stderr
