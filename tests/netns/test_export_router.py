"""The router side of ``rdplab export``: the shell script for a Linux gateway, run for real
in a lab router namespace (nftables), repairs what the network faults break, and a second
run changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rdplab import export as ex
from rdplab.catalog import get

pytestmark = pytest.mark.netns

HOST, PORT, OUTSIDE = "192.168.56.11", 3389, "203.0.113.1"


def _script(tmp_path: Path, fault: str, fix: str) -> Path:
    (export,) = [e for e in ex.catalog_exports(get(fault), fix) if e.role == "router"]
    (path,) = ex.write([export], tmp_path)
    return path


def _run(built: Any, path: Path, *args: str) -> dict[str, Any]:
    done = built.exec("router", ["bash", str(path), *args], timeout=30)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_router_scripts_are_valid_bash(tmp_path: Path) -> None:
    routers = [e for e in ex.all_exports() if e.role == "router"]
    assert {e.fault for e in routers} == {
        "port-forward-missing",
        "port-forward-stale",
        "vpn-mtu-blackhole",
    }
    for path in ex.write(routers, tmp_path):
        check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, (path.name, check.stderr)
        assert path.stat().st_mode & 0o111


def test_exported_forward_repairs_a_real_router(tmp_path: Path, lab: Callable[..., Any]) -> None:
    """port-forward-missing's fix, as the exported shell script, in a real router
    namespace with no forward: afterwards the outside client gets through TLS."""
    built = lab("outside")
    server = built.serve_rdp()
    path = _script(tmp_path, "port-forward-missing", "add-forward")
    assert _run(built, path, "--dry-run")["results"][0]["changed"] is True
    before = built.probe(OUTSIDE, PORT, timeout=2)
    assert before.failed_stage == "tcp"  # --dry-run changed nothing
    first = _run(built, path)
    assert [r["changed"] for r in first["results"]] == [True]
    ruleset = built.exec("router", ["nft", "list", "table", "ip", "rdplab_nat"]).stdout
    assert f"tcp dport {PORT} dnat to {HOST}:{PORT}" in ruleset
    after = built.probe(OUTSIDE, PORT, timeout=5)
    assert after.ok or after.failed_stage not in ("tcp", "name-resolution"), after
    assert server.seen.requests, "the host saw no X.224 request through the new forward"
    again = _run(built, path)
    assert [r["changed"] for r in again["results"]] == [False]


def test_exported_mss_clamp_is_idempotent_in_a_real_router(
    tmp_path: Path, lab: Callable[..., Any]
) -> None:
    built = lab("vpn")
    clamp = _script(tmp_path, "vpn-mtu-blackhole", "clamp-mss")
    assert [r["changed"] for r in _run(built, clamp)["results"]] == [True]
    assert [r["changed"] for r in _run(built, clamp)["results"]] == [False]
    rules = built.exec("router", ["nft", "list", "table", "inet", "rdplab_filter"]).stdout
    assert "maxseg size set rt mtu" in rules
    icmp = _script(tmp_path, "vpn-mtu-blackhole", "pass-icmp-frag-needed")
    assert [r["changed"] for r in _run(built, icmp)["results"]] == [False]  # nothing dropped


def test_the_export_command_writes_the_router_script(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rdplab", "export", "port-forward-stale", "-o", str(tmp_path),
         "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = sorted(Path(r["file"]).name for r in json.loads(done.stdout))
    assert names == [
        "port-forward-stale--reserve-and-forward.sh",
        "port-forward-stale--static-address--host.ps1",
        "port-forward-stale--static-address--router.sh",
    ]
