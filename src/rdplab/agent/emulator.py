"""The agent's request/response contract answered by a twin (for loopback tests).

No PowerShell runs on Linux, so the loopback WS-Management responder and the loopback
OpenSSH server's forced command hand each agent request to this module: the transport,
framing, install and error paths are real; the answer comes from the twin. agent.ps1
answers the same requests on Windows (docs/agent-protocol.md).

Every op and facts section is the twin's, the IPv4 area (``ip.static``, ``ip.dhcp.lease``,
the gather request's ``"ip"``) included. Two lab breaks are answered here although agent.ps1
refuses them, because Windows offers no way to make them: ``dns.cache.seed`` (no API plants
a DNS cache entry) and ``ip.dhcp.lease`` (the DHCP server, not the client, picks the lease).
The loopback suites run the catalog's breaks through this module, so it keeps the twin's
behaviour; what agent.ps1 does instead is in docs/agent-review.md.
"""

from __future__ import annotations

import json
from typing import Any

from rdplab.agent import PROTOCOL
from rdplab.errors import RdplabError
from rdplab.ops import Op
from rdplab.twin import Twin


def handle(twin: Twin, request: bytes, agent_version: str) -> tuple[int, bytes, bytes]:
    """Answer one request as agent.ps1 would: (exit code, stdout, stderr)."""
    try:
        req = json.loads(request.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return 2, b"", f"rdplab agent: request is not JSON: {exc}".encode()
    if not isinstance(req, dict) or req.get("rdplab_agent") != PROTOCOL:
        return 2, b"", b"rdplab agent: not an rdplab agent request (protocol 1)"
    out: dict[str, Any] = {
        "rdplab_agent": PROTOCOL,
        "id": req.get("id"),
        "agent_version": agent_version,
    }
    try:
        if "gather" in req:
            out["facts"] = twin.gather(req["gather"] or {})
        elif "ops" in req:
            ops = [Op(str(o["op"]), dict(o.get("args") or {})) for o in req["ops"]]
            result = twin.apply(ops)
            out["results"] = [r.to_json() for r in result.results]
            out["rolled_back"] = bool(result.errors)
            if out["rolled_back"]:  # exit 1: an op failed and the batch was rolled back
                return 1, json.dumps(out).encode(), b""
        else:
            return 2, b"", b"rdplab agent: request has neither 'gather' nor 'ops'"
    except (RdplabError, KeyError, TypeError) as exc:
        out["error"] = str(exc)
        return 1, json.dumps(out).encode(), str(exc).encode()
    return 0, json.dumps(out).encode(), b""


def handle_script(
    twin: Twin, script: bytes, parameters: tuple[str, ...]
) -> tuple[int, bytes, bytes]:
    """Answer a script run (``commands.script_command``) as an exported remediation script
    would on Windows: its op batch, read back out of the script (``export.read_batch``), is
    applied to the twin; ``-WhatIf`` prints each op and changes nothing; a lowers-security
    script without ``-AllowLowerSecurity`` is refused (exit 2). A script that is not an
    rdplab export cannot run here: no PowerShell on this machine."""
    from rdplab import export

    text = script.decode("utf-8-sig", "replace")
    try:
        ops = export.read_batch(text)
    except RdplabError:
        return 1, b"", b"loopback emulator: no PowerShell here; only rdplab exports can run"
    if export.risk_of(text) == "lowers-security" and "-AllowLowerSecurity" not in parameters:
        return 2, b"", b"rdplab: this fix lowers security; refused (-AllowLowerSecurity)\r\n"
    if "-WhatIf" in parameters:
        said = "".join(
            f'What if: Performing the operation "{export.describe(o)}" on target'
            f' "{twin.computer.name}".\r\n'
            for o in ops
        )
        said += '{"results": [], "rolled_back": false}\r\n'
        return 0, said.encode(), b"rdplab: nothing run, nothing changed (-WhatIf or declined).\r\n"
    result = twin.apply(ops)
    answer = {"results": [r.to_json() for r in result.results], "rolled_back": bool(result.errors)}
    return (1 if result.errors else 0), (json.dumps(answer) + "\r\n").encode(), b""
