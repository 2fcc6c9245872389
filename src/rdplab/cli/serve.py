"""rdplab serve --lab-file F --scenario ID [--address A] [--port P]: break a scenario on the
sim and serve its host's Remote Desktop listener on a real socket, so a real RDP client
(mstsc, xfreerdp) can dial it and meet the failure. The first stdout line is the port;
runs until interrupted (SIGINT or SIGTERM stop it cleanly, exit 0)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

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
    network: Annotated[
        bool,
        typer.Option(
            "--network",
            help="Build the scenario's whole network as Linux namespaces (client, router, host;"
            " root) and serve the host there; then: rdplab netlab shell client.",
        ),
    ] = False,
    state: Annotated[
        Path, typer.Option(help="With --network: where the running lab is described.")
    ] = Path(".rdplab/netlab.json"),
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
    if network:
        serve_network(sc, lab_file, reveal, state)
        return
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
            _say(lock, f"host: {server.behaviour.reason}")
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


def serve_network(sc: Any, lab_file: Path, reveal: bool, state: Path) -> None:
    """``--network``: the scenario broken on the sim twins, its network built for real
    (``rdplab.providers.netns``: the router's nftables, the host's firewall, the lab DNS),
    the host served in its namespace, until interrupted."""
    from rdplab.backends.router_sim import SimRouterBackend
    from rdplab.backends.sim import SimBackend
    from rdplab.netlab import NetlabUnavailable, build, require
    from rdplab.netlab import session as ns
    from rdplab.providers.netns import net_plan, serve_host
    from rdplab.providers.sim import SimProvider
    from rdplab.scenario import BREAK, run_scenario
    from rdplab.serve import RDPServer

    try:
        require()
    except NetlabUnavailable as exc:
        fail(f"--network: {exc}")
    run = run_scenario(SimProvider(), sc, BREAK)
    if run.error:
        fail(f"scenario {sc.id}: {run.failed_step} failed: {run.error}")
    client, host, router = run.lab.client, run.lab.host, run.lab.router
    assert isinstance(client, SimBackend) and isinstance(host, SimBackend)
    rtwin = router.twin if isinstance(router, SimRouterBackend) else None
    net = sc.network
    port = net.target_port
    plan = net_plan(sc, client.twin, host.twin, rtwin, f"s{os.getpid() % 100000:x}")
    lock = threading.Lock()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    lab = build(plan)
    server: RDPServer | None = None
    try:
        server = serve_host(lab, sc, client.twin, host.twin, on_event=lambda line: _say(lock, line))
        ns.write_resolv(lab.names["client"], lab.dns_server, net.host_name.split(".", 1)[-1])
        session = ns.NetSession(
            sc.id,
            str(lab_file),
            os.getpid(),
            plan.run_id,
            dict(lab.names),
            lab.dial_address,
            port,
            net.host_name,
            lab.dns_server,
            net.client_site,
        )
        ns.write(session, state)
        _say(lock, str(port))
        _say(
            lock,
            f"rdplab serve: the network of scenario {sc.id!r} as Linux namespaces (client"
            f" {lab.names['client']}, router {lab.names['router']}, host"
            f" {lab.names['host']}); the host is a simulated twin (no Windows runs here);"
            " Ctrl+C stops",
        )
        _say(lock, "a shell in the client: rdplab netlab shell client   (router, host too)")
        _say(lock, f"dial it there: xfreerdp /v:{net.host_name} /u:USER /p:PASS /cert:ignore")
        if reveal:
            _say(lock, f"host: {server.behaviour.reason}")
        while not stop.wait(0.2):
            pass
    finally:
        if server is not None:
            stopper = threading.Thread(target=server.stop, daemon=True)
            stopper.start()
            stopper.join(STOP_GRACE_S)
        ns.remove_resolv(lab.names["client"])
        lab.close()
        state.unlink(missing_ok=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
    _say(lock, "rdplab serve: stopped")
