#!/usr/bin/env python3
"""Benchmark: the whole scenario matrix, on the sim provider or over real pywinrm.

Prints wall time for the matrix and the remote calls each scenario costs (calls per
machine per phase is the number that matters on real VMs; the budget is 1).

    python benchmarks/lab_matrix.py [--lab-file labs/rdp-0x904.yaml] [--repeat 3] [--json]
    python benchmarks/lab_matrix.py --over winrm-loopback

``--over winrm-loopback`` runs every scenario through pywinrm against two loopback
WS-Management responders (tests/loopback/winrm_lab.py): the HTTP / SOAP round trips are
real and the commands are counted on the responder, i.e. on the wire; the Windows machines
behind them are twins. No Windows ran in either mode.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rdplab.lab import load_lab
from rdplab.providers import Provider, get_provider
from rdplab.scenario import ScenarioRun, run_scenario

REPO = Path(__file__).resolve().parents[1]
OVER = ("sim", "winrm-loopback")


@contextmanager
def lab_provider(over: str) -> Iterator[Provider]:
    if over == "sim":
        yield get_provider("sim")
        return
    sys.path.insert(0, str(REPO))  # the loopback responder lives with the tests
    from tests.loopback.winrm_lab import winrm_lab

    with winrm_lab() as provider:
        yield provider


def wire_commands(provider: Provider) -> dict[str, int] | None:
    counts = getattr(provider, "wire_commands", None)
    return dict(counts()) if counts else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--lab-file", type=Path, default=REPO / "labs" / "rdp-0x904.yaml")
    parser.add_argument("--repeat", type=int, default=3, help="matrix runs; best is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--over",
        choices=OVER,
        default="sim",
        help="sim: in-process twins; winrm-loopback: real pywinrm to loopback responders",
    )
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    lab = load_lab(args.lab_file)
    load_s = time.perf_counter() - t0
    walls: list[float] = []
    runs: list[tuple[ScenarioRun, dict[str, int] | None]] = []
    with lab_provider(args.over) as provider:
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            runs = []
            for s in lab.scenarios:
                run = run_scenario(provider, s)
                runs.append((run, wire_commands(provider)))
            walls.append(time.perf_counter() - start)
    failed = [r.scenario.id for r, _ in runs if r.error]
    per = [
        {
            "scenario": r.scenario.id,
            "seconds": round(r.seconds, 4),
            "calls": sum(r.calls.values()),
            "max_calls_per_machine_phase": r.max_calls_per_machine_phase,
            "calls_by_machine_phase": r.calls,
            **({"wire_commands": wire} if wire is not None else {}),
        }
        for r, wire in runs
    ]
    result = {
        "provider": args.over,
        "lab_file": str(args.lab_file),
        "scenarios": len(runs),
        "wall_s": round(min(walls), 4),
        "wall_s_all_runs": [round(w, 4) for w in walls],
        "first_run_s": round(walls[0], 4),
        "lab_load_s": round(load_s, 4),
        "max_calls_per_machine_phase": max(p["max_calls_per_machine_phase"] for p in per),
        "calls_per_scenario": max(p["calls"] for p in per),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "errors": failed,
        "per_scenario": per,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        wired = args.over != "sim"
        print(
            f"{'scenario':42s} {'s':>7s} {'calls':>5s} {'max/machine/phase':>17s}"
            + ("  on the wire (client, host)" if wired else "")
        )
        for p in per:
            wire = p.get("wire_commands") or {}
            print(
                f"{p['scenario']:42s} {p['seconds']:7.4f} {p['calls']:5d}"
                f" {p['max_calls_per_machine_phase']:17d}"
                + (f"  {wire.get('client', 0)}, {wire.get('host', 0)}" if wired else "")
            )
        print(
            f"\n{result['scenarios']} scenarios over {args.over}:"
            f" best wall {result['wall_s']:.3f} s"
            f" (first run {result['first_run_s']:.3f} s, lab load {load_s:.3f} s,"
            f" {result['cpus']} CPUs); max calls per machine per phase:"
            f" {result['max_calls_per_machine_phase']}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
