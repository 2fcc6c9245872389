"""rdplab serve, run as a user runs it (a subprocess): the port on the first line, the
host's answers on a real socket, clean exits on SIGINT and SIGTERM, one-line usage errors."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from rdplab.probe import probe

from .serve_process import REPO, serving

pytestmark = pytest.mark.winrm_loopback  # the loopback network suite (no sshd needed)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rdplab", "serve", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serves_the_healthy_host_until_signalled(sig: int) -> None:
    with serving("--scenario", "healthy", "--port", "0") as served:
        result = probe("127.0.0.1", served.port, timeout=5)
        served.wait_for("CredSSP: answered TSRequest version 6")
        assert served.stop(sig) == 0
    assert result.ok and result.credssp_version == 6, result.to_json()
    lines = served.output.splitlines()
    assert lines[0] == str(served.port)
    assert f"the host of scenario 'healthy' (rdp-0x904) on 127.0.0.1:{served.port}" in lines[1]
    assert "no Windows runs here" in lines[1]
    assert lines[-1] == "rdplab serve: stopped"
    assert "host:" not in served.output  # the reason is told only with --reveal


def test_a_silent_client_does_not_hold_the_stop() -> None:
    """A client that connects and then says nothing (a handler waiting mid-handshake)
    must not keep SIGTERM from ending the command promptly."""
    with serving("--scenario", "healthy", "--port", "0") as served:
        silent = socket.create_connection(("127.0.0.1", served.port), timeout=5)
        try:
            time.sleep(1)  # accepted: its handler now waits for the X.224 request
            start = time.monotonic()
            assert served.stop(signal.SIGTERM, timeout=15) == 0
            assert time.monotonic() - start < 8
        finally:
            silent.close()
    assert served.output.splitlines()[-1] == "rdplab serve: stopped"


@pytest.mark.parametrize(
    ("scenario", "stage", "evidence"),
    [
        ("rdp-disabled", "tcp", "refused"),
        ("security-layer-mismatch", "x224", "SSL_NOT_ALLOWED_BY_SERVER"),
        ("rdp-cert-corrupt", "tls", "TLS handshake with"),
    ],
)
def test_the_probe_meets_the_broken_host(scenario: str, stage: str, evidence: str) -> None:
    with serving("-s", scenario, "--port", "0", "--reveal") as served:
        result = probe("127.0.0.1", served.port, timeout=2)
        reveal = served.wait_for("host: ")
    assert result.failed_stage == stage and evidence in result.evidence, result.to_json()
    assert reveal.strip() != "host:"


def test_the_firewall_drops_silently() -> None:
    with serving("-s", "firewall-blocked", "--port", "0") as served:
        result = probe("127.0.0.1", served.port, timeout=0.5)
    assert result.evidence == f"SYN to 127.0.0.1:{served.port} timed out after 0.5s"


def test_a_client_only_scenario_says_the_host_is_healthy() -> None:
    with serving("-s", "licensing-cache-stale", "--port", "0") as served:
        served.wait_for("note: this scenario breaks nothing on the host")
        assert probe("127.0.0.1", served.port, timeout=5).ok


def test_a_fixed_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with serving("-s", "healthy", "--port", str(port)) as served:
        assert served.port == port


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-s", "nope"],
            "error: labs/rdp-0x904.yaml: --scenario: no scenario 'nope' (known: healthy,",
        ),
        (["-s", "healthy", "--lab-file", "no/such.yaml"], "error: "),
        (
            ["-s", "healthy", "--port", "70000"],
            "error: --port 70000: must be a number from 0 to 65535",
        ),
        (
            ["-s", "healthy", "--address", "203.0.113.1", "--port", "0"],
            "error: --address 203.0.113.1",
        ),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr.startswith(message) and len(done.stderr.strip().splitlines()) == 1, (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_port_in_use_is_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = run("-s", "healthy", "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: --address 127.0.0.1 --port {port}: cannot listen:")
