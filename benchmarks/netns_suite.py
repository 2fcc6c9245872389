#!/usr/bin/env python3
"""Benchmark: the lab suite on the netns provider (real namespaces, root), per lab file,
serial and with pytest-xdist workers (each worker its own namespaces).

    python benchmarks/netns_suite.py [--workers 0 2] [--json]

Each run is ``pytest tests/test_lab.py --lab-provider=netns --lab-file=F [-n N]`` in a
fresh subprocess; prints wall time, the outcome counts, and the connect attempts (three per
scenario: before the break, after it, after the fix; each builds and tears down the
namespaces). The goal (issue 17, docs/scale.md): the default lab file under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LABS = ("labs/rdp-0x904.yaml", "labs/network.yaml")


def run(lab: str, workers: int) -> dict[str, object]:
    argv = [sys.executable, "-m", "pytest", "tests/test_lab.py", "-q", "-p", "no:cacheprovider",
            "--lab-provider=netns", f"--lab-file={lab}", "-n", str(workers)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|error|skipped)", tail)}
    return {"lab": lab, "workers": workers, "seconds": round(seconds, 1), "exit": done.returncode,
            "outcomes": counts}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [run(lab, n) for lab in LABS for n in args.workers]
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"runs": rows, "load": round(load, 2), "cpus": os.cpu_count()}))
    else:
        for r in rows:
            print(f"{r['lab']:22s} -n {r['workers']}: {r['seconds']:6.1f} s  {r['outcomes']}"
                  f"  exit {r['exit']}")  # fmt: skip
        print(f"load {load:.2f} on {os.cpu_count()} cpus")
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
