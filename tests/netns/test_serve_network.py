"""``rdplab serve --network`` and ``rdplab netlab shell``, run as a user runs them: the
scenario's network as real namespaces, a trainee's tools in the client namespace meeting
the failure, a repair made in the router namespace (the exported router script), and a
clean stop (state file and namespaces gone)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "labs" / "network.yaml"
RDPLAB = [sys.executable, "-m", "rdplab"]


def rdplab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RDPLAB, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
    )


@pytest.fixture
def served(tmp_path: Path, netns_ready: None) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    state = tmp_path / "netlab.json"
    proc = subprocess.Popen(
        [*RDPLAB, "serve", "--network", "--lab-file", str(LAB), "--scenario",
         "port-forward-missing", "--state", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(lines) < 4:  # bounded: 4 lines or 30 s
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
    assert len(lines) == 4 and lines[0] == "3389", (
        lines,
        proc.stderr.read() if proc.poll() else "",
    )
    assert "rdplab netlab shell client" in lines[2]
    try:
        yield proc, state
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _probe(state: Path) -> dict[str, object]:
    done = rdplab("netlab", "shell", "client", "--state", str(state), "--",
                  *RDPLAB, "probe", "host.rdplab.test", "--json", "--timeout", "2")  # fmt: skip
    return dict(json.loads(done.stdout))


def test_a_trainee_meets_the_failure_and_repairs_it_in_the_router(
    served: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    proc, state = served
    status = json.loads(rdplab("netlab", "status", "--state", str(state), "--json").stdout)
    assert status["scenario"] == "port-forward-missing" and status["pid"] == proc.pid
    assert status["dial_address"] == "203.0.113.1" and status["client_site"] == "outside"
    before = _probe(state)
    assert before["failed_stage"] == "tcp" and "timed out" in str(before["error"])
    # the client's tools resolve through the lab's DNS server (its resolv.conf in the netns)
    stages = before["stages"]
    assert isinstance(stages, list) and "203.0.113.1" in stages[0]["detail"]
    # the repair: the exported router script, run in the router's namespace
    export = rdplab("export", "port-forward-missing", "-o", str(tmp_path / "fix"), "--json")
    (script,) = [Path(r["file"]) for r in json.loads(export.stdout)]
    fixed = rdplab("netlab", "shell", "router", "--state", str(state), "--", "bash", str(script))
    assert fixed.returncode == 0, fixed.stderr
    after = _probe(state)
    assert after["failed_stage"] != "tcp" and after.get("selected_protocol") is not None, after


def test_stop_removes_the_namespaces_and_the_state(
    served: tuple[subprocess.Popen[str], Path],
) -> None:
    proc, state = served
    names = json.loads(state.read_text())["names"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    assert not state.exists()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in left for n in names.values()), left
    assert not any(Path("/etc/netns", n).exists() for n in names.values())
    gone = rdplab("netlab", "shell", "client", "--state", str(state), "--", "true")
    assert gone.returncode == 2 and "no network lab is running" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1, gone.stderr


def test_netlab_without_a_running_lab_is_one_line(tmp_path: Path) -> None:
    done = rdplab("netlab", "status", "--state", str(tmp_path / "none.json"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "rdplab serve --network" in done.stderr
    assert os.path.basename("none.json") in done.stderr


def test_an_exercise_over_the_network_is_graded_from_the_router(tmp_path: Path) -> None:
    """rdplab exercise new --network keeps the drawn exercise's network up; the trainee's
    repair in the router namespace (the exported forward script) is what check --network
    grades: still broken before it, repaired and connected after it."""
    from rdplab.exercise.pick import draw, lab_digest
    from rdplab.lab import load_lab

    lab, digest = load_lab(LAB), lab_digest(LAB)
    seed = next(
        s for s in range(1, 80) if draw(lab, s, 1, digest)[1][0].fault == "port-forward-missing"
    )
    ex_state, net_state = tmp_path / "ex.json", tmp_path / "netlab.json"
    proc = subprocess.Popen(
        [*RDPLAB, "exercise", "new", "--network", "--lab-file", str(LAB), "--seed", str(seed),
         "--faults", "1", "--state", str(ex_state), "--netlab-state", str(net_state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        for _ in range(60):  # bounded: until the lab is up
            line = proc.stdout.readline()
            if not line or line.startswith("dial it there"):
                break
        assert net_state.exists(), proc.stderr.read() if proc.poll() is not None else ""

        def check(name: str) -> dict[str, object]:
            done = rdplab("exercise", "check", "--network", "--state", str(ex_state),
                          "--netlab-state", str(net_state), "--out", str(tmp_path / name),
                          "--json")  # fmt: skip
            assert done.returncode == 0, done.stderr
            return dict(json.loads(done.stdout))

        before = check("before.json")
        assert before["causes"] == [
            {"fault": "port-forward-missing", "role": "router", "verdict": "still-broken"}
        ]
        assert before["connection"] == {**before["connection"], "ok": False, "failed_stage": "tcp"}  # type: ignore[dict-item]
        export = rdplab("export", "port-forward-missing", "-o", str(tmp_path / "fix"), "--json")
        (script,) = [Path(r["file"]) for r in json.loads(export.stdout)]
        fixed = rdplab(
            "netlab", "shell", "router", "--state", str(net_state), "--", "bash", str(script)
        )
        assert fixed.returncode == 0, fixed.stderr
        after = check("after.json")
        assert after["score"] == 1.0, after
        assert after["connection"]["ok"] is True  # type: ignore[index]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
