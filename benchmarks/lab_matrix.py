#!/usr/bin/env python3
"""Benchmark: the whole scenario matrix, on the sim provider or over real pywinrm.

Prints wall time for the matrix and the remote calls each scenario costs (calls per
machine per phase is the number that matters on real VMs; the budget is 1).

    python benchmarks/lab_matrix.py [--lab-file labs/rdp-0x904.yaml] [--repeat 3] [--json]
    python benchmarks/lab_matrix.py --over winrm-loopback [--latency-ms 50] [--workers 2]

``--over winrm-loopback`` runs every scenario through pywinrm against two loopback
WS-Management responders (tests/loopback/winrm_lab.py): the HTTP / SOAP round trips are
real and the commands are counted on the responder, i.e. on the wire; the Windows machines
behind them are twins. No Windows ran in either mode. ``--latency-ms`` adds that much to
every agent call on the responders (a stand-in for a real network and a real PowerShell).

Scale (docs/scale.md): ``wall_s`` is the serial matrix on one lab; ``parallel_wall_s`` is
the same matrix split over ``--workers`` labs, one process each (as pytest-xdist does;
each worker takes every Nth scenario, the ``--lab-shard`` rule), timed from the moment
every worker's lab is up. ``restores`` counts the machines the resets restored (the
cheaper-reset rule on, unless ``--always-restore``); the sim rebuilds every twin always.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rdplab.lab import load_lab
from rdplab.providers import Provider, get_provider
from rdplab.scenario import ScenarioRun, run_scenario
from rdplab.workers import shard

REPO = Path(__file__).resolve().parents[1]
OVER = ("sim", "winrm-loopback")


@contextmanager
def lab_provider(over: str, latency_ms: float = 0.0) -> Iterator[Provider]:
    if over == "sim":
        yield get_provider("sim")
        return
    sys.path.insert(0, str(REPO))  # the loopback responder lives with the tests
    from tests.loopback.winrm_lab import winrm_lab

    with winrm_lab(latency_s=latency_ms / 1000) as provider:
        yield provider


def run_matrix(
    provider: Provider, scenarios: list[Any]
) -> list[tuple[ScenarioRun, dict[str, int] | None]]:
    return [(run_scenario(provider, s), wire_commands(provider)) for s in scenarios]


def worker_main(args: argparse.Namespace) -> int:
    """One parallel worker: its own lab, its shard; ready -> wait for go -> JSON result."""
    index, count = (int(x) for x in args.worker.split("/"))
    scenarios = shard(load_lab(args.lab_file).scenarios, index, count)
    with lab_provider(args.over, args.latency_ms) as provider:
        provider.always_restore = provider.always_restore or args.always_restore
        print("ready", flush=True)
        sys.stdin.readline()
        start = time.perf_counter()
        runs = run_matrix(provider, scenarios)
        wall = time.perf_counter() - start
    json.dump(
        {
            "wall_s": wall,
            "errors": [r.scenario.id for r, _ in runs if r.error],
            "restores": sum(len(r.restored) for r, _ in runs),
            "scenarios": [r.scenario.id for r, _ in runs],
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


def parallel(args: argparse.Namespace) -> dict[str, Any]:
    """The matrix over ``args.workers`` labs, one process each, timed from when all are
    ready (their labs up) to when the last finishes."""
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, __file__, "--worker", f"{i}/{args.workers}"),
                *("--over", args.over, "--lab-file", str(args.lab_file)),
                *("--latency-ms", str(args.latency_ms)),
                *(["--always-restore"] if args.always_restore else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(1, args.workers + 1)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != "ready":
                raise SystemExit(f"benchmark worker did not start (said {line!r})")
        start = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=3600)
            results.append(json.loads(out.strip().splitlines()[-1]))
        wall = time.perf_counter() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    covered = sorted(s for r in results for s in r["scenarios"])
    return {
        "wall_s": wall,
        "worker_wall_s": [round(r["wall_s"], 4) for r in results],
        "errors": [e for r in results for e in r["errors"]],
        "restores": sum(r["restores"] for r in results),
        "scenarios": covered,
    }


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
    parser.add_argument(
        "--workers", type=int, default=2, help="labs for parallel_wall_s (1: no parallel run)"
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="winrm-loopback: added to every agent call on the responders (default 0)",
    )
    parser.add_argument(
        "--always-restore",
        action="store_true",
        help="restore every machine before every scenario (the cheaper-reset rule off)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one parallel worker
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.latency_ms < 0 or args.workers < 1:
        parser.error("--latency-ms must be >= 0 and --workers >= 1")

    t0 = time.perf_counter()
    lab = load_lab(args.lab_file)
    load_s = time.perf_counter() - t0
    walls: list[float] = []
    runs: list[tuple[ScenarioRun, dict[str, int] | None]] = []
    restores = 0
    with lab_provider(args.over, args.latency_ms) as provider:
        provider.always_restore = provider.always_restore or args.always_restore
        for _ in range(max(1, args.repeat)):
            before = provider.restores
            provider.clean = {}  # every repeat starts from a restore, as a session does
            start = time.perf_counter()
            runs = run_matrix(provider, list(lab.scenarios))
            walls.append(time.perf_counter() - start)
            restores = provider.restores - before
    par = parallel(args) if args.workers > 1 else None
    failed = [r.scenario.id for r, _ in runs if r.error]
    if par is not None:
        failed += par["errors"]
        if par["scenarios"] != sorted(s.id for s in lab.scenarios):
            failed.append("parallel run did not cover the matrix exactly once")
    per = [
        {
            "scenario": r.scenario.id,
            "seconds": round(r.seconds, 4),
            "calls": sum(r.calls.values()),
            "restored": r.restored,
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
        "workers": args.workers,
        "parallel_wall_s": round(par["wall_s"], 4) if par else None,
        "parallel_worker_wall_s": par["worker_wall_s"] if par else None,
        "speedup": round(min(walls) / par["wall_s"], 2) if par else None,
        "latency_ms": args.latency_ms,
        "always_restore": bool(args.always_restore or args.over == "sim"),
        "restores": restores,
        "restores_parallel": par["restores"] if par else None,
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
            f" {result['max_calls_per_machine_phase']}; restores {restores}"
        )
        if par:
            print(
                f"parallel over {args.workers} labs: {par['wall_s']:.3f} s"
                f" (x{result['speedup']} against serial; worker walls"
                f" {', '.join(f'{w:.3f}' for w in par['worker_wall_s'])} s)"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
