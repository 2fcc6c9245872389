"""rdplab probe HOST[:PORT]: walk an RDP connection from this machine, up to where
credentials would be needed (name resolution, TCP, X.224, TLS, the server's first CredSSP
message). The same ``rdplab.probe.probe`` the real providers use for their connect step."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated, Any

import typer

from rdplab.cli.app import EXIT_FINDINGS, EXIT_OK, app, fail, out
from rdplab.connection import (
    PROTOCOL_HYBRID,
    PROTOCOL_HYBRID_EX,
    PROTOCOL_RDP,
    PROTOCOL_SSL,
    ConnectionResult,
)

#: --protocols names -> requestedProtocols bits ([MS-RDPBCGR] 2.2.1.1.1)
PROTOCOL_FLAGS = {
    "rdp": PROTOCOL_RDP,
    "tls": PROTOCOL_SSL,
    "credssp": PROTOCOL_HYBRID,
    "credssp-ex": PROTOCOL_HYBRID_EX,
}
#: the specification's names for selectedProtocol
SPEC_NAMES = {
    PROTOCOL_RDP: "PROTOCOL_RDP",
    PROTOCOL_SSL: "PROTOCOL_SSL",
    PROTOCOL_HYBRID: "PROTOCOL_HYBRID",
    PROTOCOL_HYBRID_EX: "PROTOCOL_HYBRID_EX",
}
DEFAULT_PORT = 3389


def parse_target(target: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [IPv6] or [IPv6]:PORT; a bare IPv6 address has no port."""
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", target)
    if m:
        host, port = m.group(1), m.group(2)
    elif target.count(":") == 1:
        host, port = target.split(":")
    else:
        host, port = target, None
    if not host:
        raise ValueError(f"{target!r}: no host name or address")
    if port is None:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{target!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def parse_protocols(text: str) -> int:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROTOCOL_FLAGS]
    if unknown or not names:
        raise ValueError(
            f"--protocols {text!r}: unknown {', '.join(unknown) or 'empty list'}"
            f" (choose from {', '.join(PROTOCOL_FLAGS)})"
        )
    bits = 0
    for n in names:
        bits |= PROTOCOL_FLAGS[n]
    return bits


def probe_json(target: str, result: ConnectionResult) -> dict[str, Any]:
    """The JSON contract of ``rdplab probe --json`` (README, "Diagnose a real machine")."""
    from rdplab.probe import certificate_info

    failed = next((s for s in result.stages if not s.ok), None)
    selected = result.selected_protocol
    return {
        "target": target,
        "ok": result.ok,
        "failed_stage": result.failed_stage,
        "selected_protocol": SPEC_NAMES.get(selected, f"0x{selected:x}")
        if selected is not None
        else None,
        "failure_code": result.negotiation_failure,
        "certificate": certificate_info(result.peer_certificate),
        "credssp_version": result.credssp_version,
        "stages": [{"name": s.name, "ok": s.ok, "detail": s.detail} for s in result.stages],
        "not_probed": dict(result.not_probed),
        "notes": list(result.notes),
        "error": failed.detail if failed else None,
    }


@app.command()
def probe(
    target: Annotated[str, typer.Argument(metavar="HOST[:PORT]", help="Port 3389 by default.")],
    timeout: Annotated[
        float, typer.Option(min=0.1, max=600, help="Seconds each stage may take at most.")
    ] = 5.0,
    protocols: Annotated[
        str,
        typer.Option(
            help="What the X.224 request offers, comma-separated: rdp, tls, credssp,"
            " credssp-ex (default: tls,credssp, as mstsc)."
        ),
    ] = "tls,credssp",
    server_name: Annotated[
        str | None, typer.Option(help="TLS SNI name (default: none, as mstsc by address).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Probe an RDP listener: name resolution, TCP, X.224, TLS, CredSSP version.

    Sends no credentials. Exit 0 when every probed stage passed, 1 when one failed,
    2 on a usage error."""
    from rdplab.probe import probe as live_probe

    try:
        host, port = parse_target(target)
        requested = parse_protocols(protocols)
    except ValueError as exc:
        fail(str(exc))
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    result = live_probe(host, port, timeout=timeout, requested=requested, server_name=server_name)
    doc = probe_json(where, result)
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        _print(doc)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FINDINGS)


def _print(doc: dict[str, Any]) -> None:
    verdict = "[green]reachable[/]" if doc["ok"] else f"[red]fails at {doc['failed_stage']}[/]"
    out.print(f"[bold]{doc['target']}[/]: {verdict}")
    for s in doc["stages"]:
        mark = "[green]ok[/]  " if s["ok"] else "[red]FAIL[/]"
        out.print(f"  {mark} {s['name']:16s} {s['detail']}", highlight=False, soft_wrap=True)
    if doc["selected_protocol"]:
        out.print(f"  selected protocol: {doc['selected_protocol']}")
    if doc["failure_code"] is not None:
        out.print(f"  RDP_NEG_FAILURE code: {doc['failure_code']}")
    cert = doc["certificate"]
    if cert:
        kind = {True: "self-signed", False: "issued by a CA", None: "unparsed"}[cert["self_signed"]]
        out.print(f"  certificate: {cert['subject']} ({kind}), issuer {cert['issuer']}")
        out.print(f"    SHA-1 {cert['sha1']}, not after {cert['not_after']}", highlight=False)
    if doc["credssp_version"] is not None:
        out.print(f"  CredSSP version: {doc['credssp_version']}")
    for stage, why in doc["not_probed"].items():
        out.print(f"  [dim]not probed: {stage} ({why})[/]")
