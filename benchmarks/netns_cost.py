#!/usr/bin/env python3
"""Benchmark: what the netns lab costs (issue 17): build + teardown, one probe, a capture.

    python benchmarks/netns_cost.py [--repeat 5] [--json]

Needs root, ``ip``, ``nft`` and ``tcpdump`` (``rdplab.netlab.require``). For each client
site it builds a lab and closes it ``--repeat`` times (wall seconds: min, median, max),
then times one probe (``rdplab.probe.probe`` in the client namespace against
``RDPServer`` in the host namespace) through TLS, the PMTUD black hole (TLS stalls until
the probe's 3 s timeout) and its MSS-clamp fix, a capture start + stop, and prints the TLS
server flight of the stand-in certificate and of the CA-issued chain the black hole needs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from rdplab.netlab import (
    Forward,
    NetLab,
    NetlabUnavailable,
    NetPlan,
    build,
    chain_identity,
    require,
    server_flight_size,
)
from rdplab.serve import Behaviour, make_identity

HOST, PORT, TUNNEL_MTU = "192.168.56.11", 3389, 1400
_n = iter(range(10_000))


def run_id() -> str:
    return f"b{os.getpid():x}{next(_n):x}"[-10:]


def plan(site: str, **fields: Any) -> NetPlan:
    if site == "outside":
        fields.setdefault("forwards", (Forward(PORT, HOST, PORT),))
    return NetPlan(run_id=run_id(), client_site=site, **fields)  # type: ignore[arg-type]


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 4),
        "median": round(statistics.median(values), 4),
        "max": round(max(values), 4),
    }


def build_close(site: str, repeat: int) -> dict[str, Any]:
    builds: list[float] = []
    closes: list[float] = []
    for _ in range(repeat):
        took, built = timed(lambda: build(plan(site)))
        builds.append(took)
        closes.append(timed(built.close)[0])
    return {"build": spread(builds), "close": spread(closes)}


def probe_time(name: str, lab: NetLab, identity: Any, timeout: float) -> dict[str, Any]:
    with lab:
        lab.serve_rdp(Behaviour(identity=identity))
        took, result = timed(lambda: lab.probe(timeout=timeout))
        failed = [s.name for s in result.stages if not s.ok]
        return {"case": name, "seconds": round(took, 4), "ok": result.ok, "failed": failed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        require()
    except NetlabUnavailable as exc:
        print(f"skipped: {exc}")
        return 0
    stand_in, chain = make_identity(), chain_identity()
    report: dict[str, Any] = {
        "tls_flight_bytes": {
            "stand-in self-signed EC P-256": server_flight_size(stand_in),
            "CA-issued RSA 2048 + issuing CA": server_flight_size(chain),
        },
        "build_close_s": {s: build_close(s, args.repeat) for s in ("lan", "outside", "vpn")},
    }
    vpn = {"client_link_mtu": TUNNEL_MTU, "icmp_frag_needed": False}
    report["probe_s"] = [
        probe_time("lan, TLS", build(plan("lan")), stand_in, 5),
        probe_time("outside via forward, TLS", build(plan("outside")), stand_in, 5),
        probe_time("vpn black hole (3 s timeout)", build(plan("vpn", **vpn)), chain, 3),
        probe_time(
            "vpn with MSS clamp",
            build(plan("vpn", mss_clamp=TUNNEL_MTU - 40, **vpn)),
            chain,
            3,
        ),
    ]
    with build(plan("lan")) as lab:
        lab.serve_rdp()
        start, cap = timed(lab.capture)
        lab.probe(timeout=5)
        stop, events = timed(cap.stop)
        report["capture_s"] = {
            "start": round(start, 4),
            "stop_and_ladder": round(stop, 4),
            "events": len(events),
        }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    for name, size in report["tls_flight_bytes"].items():
        print(f"TLS server flight, {name}: {size} bytes")
    for site, cost in report["build_close_s"].items():
        b, c = cost["build"], cost["close"]
        print(
            f"{site:8} build {b['median']:.3f} s (min {b['min']:.3f}, max {b['max']:.3f}),"
            f" close {c['median']:.3f} s (min {c['min']:.3f}, max {c['max']:.3f})"
            f" over {args.repeat}"
        )
    for row in report["probe_s"]:
        verdict = "ok" if row["ok"] else f"failed at {', '.join(row['failed'])}"
        print(f"probe, {row['case']}: {row['seconds']:.3f} s ({verdict})")
    cap_cost = report["capture_s"]
    print(
        f"capture: start {cap_cost['start']:.3f} s, stop + ladder"
        f" {cap_cost['stop_and_ladder']:.3f} s ({cap_cost['events']} events)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
