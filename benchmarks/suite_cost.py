#!/usr/bin/env python3
"""Benchmark: what the sim lab suite costs against pytest running as many empty tests.

    python benchmarks/suite_cost.py [--repeat 3] [--json]

Runs ``pytest tests/test_lab.py`` (the sim provider) and ``pytest`` over a generated file
of the same number of empty tests, each in a fresh subprocess with the same options,
alternately, ``--repeat`` times; reports the best wall time and the best CPU time (user +
system of the subprocess, less sensitive to other load on the machine) of each, and their
ratios. The goal (issue 11, docs/scale.md): the lab suite costs at most 1.5 times the
empty tests. Both runs load the same plugins (rdplab's included), so the ratio is the
lab's own work: building twins, running the scenarios, the report rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ("-q", "-p", "no:cacheprovider", "-p", "no:xdist")


def run(args: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s, stdout) of one pytest subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *args, *OPTIONS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed:\n{proc.stdout[-2000:]}")
    return wall, cpu, proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; best is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    lab_args = ["tests/test_lab.py"]
    _, _, out = run([*lab_args, "--collect-only"])
    m = re.search(r"(\d+) tests? collected", out)
    count = int(m.group(1)) if m else 0
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "test_empty.py"
        empty.write_text(
            "import pytest\n\n\n"
            f"@pytest.mark.parametrize('i', range({count}))\n"
            "def test_empty(i):\n    pass\n"
        )
        lab: list[tuple[float, float]] = []
        base: list[tuple[float, float]] = []
        for _ in range(max(1, args.repeat)):
            base.append(run([str(empty), "--rootdir", str(REPO)])[:2])
            lab.append(run(lab_args)[:2])
    result = {
        "tests": count,
        "lab_wall_s": round(min(w for w, _ in lab), 3),
        "empty_wall_s": round(min(w for w, _ in base), 3),
        "lab_cpu_s": round(min(c for _, c in lab), 3),
        "empty_cpu_s": round(min(c for _, c in base), 3),
        "repeat": max(1, args.repeat),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    result["wall_ratio"] = round(result["lab_wall_s"] / result["empty_wall_s"], 2)
    result["cpu_ratio"] = round(result["lab_cpu_s"] / result["empty_cpu_s"], 2)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(
            f"{count} tests: lab suite {result['lab_wall_s']:.2f} s wall,"
            f" {result['lab_cpu_s']:.2f} s CPU; empty tests {result['empty_wall_s']:.2f} s"
            f" wall, {result['empty_cpu_s']:.2f} s CPU; ratio {result['wall_ratio']} (wall),"
            f" {result['cpu_ratio']} (CPU); best of {result['repeat']}, load"
            f" {result['load_average'][0]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
