"""rdplab serve --lab-file F --scenario ID [--address A] [--port P]: break a scenario on the
sim and serve its host's Remote Desktop listener on a real socket, so a real RDP client
(mstsc, xfreerdp) can dial it and meet the failure. The first stdout line is the port;
runs until interrupted (SIGINT or SIGTERM stop it cleanly, exit 0)."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from rdplab.cli.app import app, fail
from rdplab.errors import RdplabError

#: How long a stop waits for open connections to close before the command exits anyway.
STOP_GRACE_S = 3.0


def _say(lock: threading.Lock, line: str) -> None:
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


@app.command()
def serve(
    scenario: Annotated[
        str, typer.Option("--scenario", "-s", help="The scenario whose host to serve.")
    ],
    lab_file: Annotated[Path, typer.Option(help="Lab definition (YAML).")] = Path(
        "labs/rdp-0x904.yaml"
    ),
    address: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(help="Port to listen on (0: a free one; default: the lab's RDP port)."),
    ] = None,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Say why the host answers as it does (trainers).")
    ] = False,
) -> None:
    """Serve a broken scenario's host for a real RDP client to dial (sim twin, no Windows)."""
    from rdplab.lab import load_lab
    from rdplab.serve import RDPServer, behaviour_for, broken_host, host_side

    try:
        lab = load_lab(lab_file)
    except RdplabError as exc:
        fail(exc)
    chosen = [s for s in lab.scenarios if s.id == scenario]
    if not chosen:
        known = ", ".join(s.id for s in lab.scenarios)
        fail(f"{lab_file}: --scenario: no scenario {scenario!r} (known: {known})")
    sc = chosen[0]
    net = sc.network
    listen_port = net.port if port is None else port
    if not 0 <= listen_port <= 65535:
        fail(f"--port {listen_port}: must be a number from 0 to 65535")
    try:
        host = broken_host(sc)
    except RdplabError as exc:
        fail(exc)
    from rdplab import windows as win

    program = win.WS_PROGRAM if net.transport == "websocket" else None
    behaviour = behaviour_for(host, net.target_port, program)
    lock = threading.Lock()
    try:
        server = RDPServer(address, listen_port, on_event=lambda line: _say(lock, line))
    except OSError as exc:
        fail(f"--address {address} --port {listen_port}: cannot listen: {exc.strerror or exc}")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.play(behaviour)
        _say(lock, str(server.port))
        where = f"{address}:{server.port}"
        _say(
            lock,
            f"rdplab serve: the host of scenario {sc.id!r} ({lab.name}) on {where}"
            " (a simulated twin; no Windows runs here); Ctrl+C stops",
        )
        if not host_side(sc):
            _say(lock, "note: this scenario breaks nothing on the host; it answers as healthy")
        _say(lock, f"dial it: xfreerdp /v:{where} /u:USER /p:PASS  (it authenticates nobody)")
        if reveal:
            _say(lock, f"host: {behaviour.reason}")
        server.start()  # connections waiting in the backlog are answered from here on
        while not stop.wait(0.2):
            pass
    finally:
        # Stop within a bounded time: a connection stuck mid-handshake (a client that
        # went silent) must not keep Ctrl+C or SIGTERM from ending the command.
        stopper = threading.Thread(target=server.stop, daemon=True)
        stopper.start()
        stopper.join(STOP_GRACE_S)
        for s, handler in previous.items():
            signal.signal(s, handler)
    _say(lock, "rdplab serve: stopped")
