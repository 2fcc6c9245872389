"""A real RDP client against ``rdplab serve``: Debian's FreeRDP 2 (``xfreerdp +auth-only
/cert:ignore``, under one shared Xvfb display) dials the host of every host-side scenario
of the lab file, and its own log shows the failure at the stage the connection model
gives for that host (a client at its baseline dialing it); for a host that lets a client
through, that FreeRDP got as far as NLA (the server's STATUS_LOGON_FAILURE).

The log lines matched are FreeRDP 2.11's own (libfreerdp/core: nego.c, tcp.c,
transport.c, nla.c at tag 2.11.7). The scenarios run in parallel threads: a dropped SYN
costs FreeRDP's fixed 15 s TCP connect timeout (TcpConnectTimeout; ``/timeout:`` sets the
ACK timeout, not this one), so the whole test takes about that long.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rdplab import windows as win
from rdplab.lab import load_lab
from rdplab.serve import behaviour_for, broken_host, host_alone, host_side

from . import serve_process

pytestmark = pytest.mark.rdp_client

REPO = Path(__file__).resolve().parents[2]
LAB_FILE = REPO / "labs" / "rdp-0x904.yaml"
LAB = load_lab(LAB_FILE)
SCENARIOS = [s for s in LAB.scenarios if s.id == "healthy" or host_side(s)]
INSTALL = "apt-get install freerdp2-x11 xvfb xauth"
STARTUP = 120  # seconds for ``rdplab serve`` to print its port on a busy machine
#: FreeRDP's log, stage by stage (each pattern must appear; ``absent`` must not)
SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # nothing listens: the X.224 request cannot be written, no negotiation answer
    "tcp-refused": (
        (r"transport_write:\S+ ERRCONNECT_CONNECT_TRANSPORT_FAILED",),
        (r"RDP_NEG_RSP", r"RDP_NEG_FAILURE"),
    ),
    # the SYN is dropped: the TCP connect times out
    "tcp-timeout": (
        (r"ERRCONNECT_CONNECT_FAILED", r"failed to connect to 127\.0\.0\.1"),
        (r"RequestedProtocols",),
    ),
    # SecurityLayer 0: TLS and CredSSP refused; FreeRDP falls back to Standard RDP Security,
    # which the host accepts (rdplab serve closes there: LEGACY_NOTE)
    "x224": (
        (
            r"(?s)RequestedProtocols: 3.*?RDP_NEG_FAILURE",
            r"Error: SSL_NOT_ALLOWED_BY_SERVER",
            r"(?s)RequestedProtocols: 0.*?selected_protocol: 0\b",
        ),
        (r"CONNECTION_STATE_NLA", r"selected_protocol: [12]\b"),
    ),
    "tls": (
        (r"selected_protocol: 2", r"transport_connect_tls:\S+ ERRCONNECT_TLS_CONNECT_FAILED"),
        (r"CONNECTION_STATE_NLA",),
    ),
    # FreeRDP does not apply KB 4093492's rule; its log shows the unpatched version
    "credssp": ((r"CredSSP protocol support 6, peer supports 3\b",), ()),
    "nla": (
        (
            r"CONNECTION_STATE_NEGO --> CONNECTION_STATE_NLA",
            r"CredSSP protocol support 6, peer supports 6\b",
            r"SPNEGO received NTSTATUS: STATUS_LOGON_FAILURE \[0xC000006D\] from server",
            r"ERRCONNECT_LOGON_FAILURE",
        ),
        (),
    ),
}


def expected(sc: Any) -> str:
    """The signature the host of ``sc`` must produce: from the connection model with a
    client at its baseline (the real client brings its own state)."""
    model = host_alone(sc, broken_host(sc))
    if any("Standard RDP Security" in n for n in model.notes):
        return "x224"  # FreeRDP's TLS/CredSSP requests meet SSL_NOT_ALLOWED_BY_SERVER first
    if model.failed_stage == "tcp":
        return "tcp-timeout" if "timed out" in model.evidence else "tcp-refused"
    return model.failed_stage or "nla"


@dataclass
class Dialed:
    scenario: str
    expected: str
    log: str
    rc: int
    seconds: float
    server: str
    server_rc: int


@pytest.fixture(scope="module")
def display() -> Iterator[dict[str, str]]:
    """One Xvfb display (xvfb-run -a) shared by every xfreerdp run."""
    for tool in ("xfreerdp", "xvfb-run", "xauth"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: {INSTALL})")
    holder = subprocess.Popen(
        ["xvfb-run", "-a", "sh", "-c", 'echo "$DISPLAY $XAUTHORITY"; exec cat'],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    display_name, xauthority = holder.stdout.readline().split()
    try:
        yield {"DISPLAY": display_name, "XAUTHORITY": xauthority}
    finally:
        holder.stdin.close()
        holder.wait(10)


def dial(sc: Any, env: dict[str, str]) -> Dialed:
    want = expected(sc)
    start = time.monotonic()
    args = ("--lab-file", str(LAB_FILE), "-s", sc.id, "--port", "0")
    with serve_process.serving(*args, timeout=STARTUP) as s:
        cmd = [
            "xfreerdp",
            "+auth-only",
            "/cert:ignore",
            f"/v:127.0.0.1:{s.port}",
            "/u:trainee",
            "/p:not-a-password",
            "/timeout:3000",
            "/log-level:DEBUG",
        ]
        try:
            done = subprocess.run(
                cmd,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=60,  # FreeRDP's own timeouts end it well before
            )
            log, rc = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as exc:
            log, rc = f"{exc.stdout or ''}{exc.stderr or ''}\n(timed out)", -1
        server_rc = s.stop()
    return Dialed(sc.id, want, log, rc, time.monotonic() - start, s.output, server_rc)


@pytest.fixture(scope="module")
def dialed(display: dict[str, str]) -> dict[str, Dialed]:
    """Every scenario dialed once, in parallel; the timings go to reports/."""
    start = time.monotonic()
    # the dropped-SYN scenarios wait 15 s each: start them first
    order = sorted(SCENARIOS, key=lambda s: expected(s) != "tcp-timeout")
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda s: dial(s, display), order))
    wall = time.monotonic() - start
    out = REPO / "reports" / "xfreerdp-serve.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "client": "xfreerdp (FreeRDP 2) +auth-only /cert:ignore",
                "wall_seconds": round(wall, 1),
                "scenarios": {d.scenario: [d.expected, round(d.seconds, 1)] for d in results},
            },
            indent=2,
        )
        + "\n"
    )
    return {d.scenario: d for d in results}


@pytest.mark.parametrize("scenario", [s.id for s in SCENARIOS])
def test_freerdp_fails_where_the_host_says(dialed: dict[str, Dialed], scenario: str) -> None:
    d = dialed[scenario]
    present, absent = SIGNATURES[d.expected]
    missing = [p for p in present if not re.search(p, d.log)]
    extra = [p for p in absent if re.search(p, d.log)]
    assert not missing and not extra, (d.expected, missing, extra, d.log[-3000:])
    assert d.rc != 0  # +auth-only with a refused logon or a failed connection
    assert d.server_rc == 0 and d.server.rstrip().endswith("rdplab serve: stopped"), d.server


def test_the_lab_plays_every_stage(dialed: dict[str, Dialed]) -> None:
    """The lab file's host-side scenarios between them show FreeRDP every stage's failure."""
    assert {d.expected for d in dialed.values()} == set(SIGNATURES)


def test_websocket_scenarios_serve_their_websocket_port() -> None:
    sc = LAB.scenario("firewall-websocket-blocked-host")
    b = behaviour_for(broken_host(sc), sc.network.target_port, win.WS_PROGRAM)
    assert sc.network.target_port == win.WEBSOCKET_PORTS[0] and b.listener == "drop"
