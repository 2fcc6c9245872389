"""rdplab netlab shell|status: the network lab that ``rdplab serve --network`` keeps up.

``rdplab netlab shell client`` opens a shell inside the client's namespace (also router,
host), with the lab's DNS server as its resolver: the trainee's own tools (ip, ss,
tracepath, xfreerdp, nft on the router) against the real network. ``-- CMD ...`` runs one
command there instead. ``status`` says what runs (``--json`` for scripts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from rdplab.cli.app import app, fail, out
from rdplab.errors import RdplabError

netlab_app = typer.Typer(help="The network lab of rdplab serve --network: shells, status.")
app.add_typer(netlab_app, name="netlab")

StateOpt = Annotated[
    Path, typer.Option(help="The running lab's state file (rdplab serve --network --state).")
]


@netlab_app.command(context_settings={"allow_extra_args": True})
def shell(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="client, router or host")],
    state: StateOpt = Path(".rdplab/netlab.json"),
) -> None:
    """A shell inside ROLE's namespace; after --, run that command there instead."""
    from rdplab.netlab import session as ns

    try:
        session = ns.read(state)
        argv = ns.shell_argv(session, role, list(ctx.args) or None)
    except RdplabError as exc:
        fail(exc)
    if ctx.args:
        done = subprocess.run(argv, check=False)
        raise typer.Exit(done.returncode)
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@netlab_app.command()
def status(
    state: StateOpt = Path(".rdplab/netlab.json"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """What the running network lab is: its scenario, namespaces and addresses."""
    from rdplab.netlab import session as ns

    try:
        session = ns.read(state)
    except RdplabError as exc:
        fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(session.to_json(), indent=2) + "\n")
        return
    out.print(f"scenario {session.scenario} ({session.lab_file}), served by pid {session.pid}")
    for role, name in session.names.items():
        out.print(f"  {role:7s} namespace {name}")
    out.print(
        f"  the client dials {session.host_name} -> {session.dial_address}:{session.port}"
        f" (client site {session.client_site}; DNS {session.dns_server})"
    )
