"""The agent's request/response contract answered by a twin (for loopback tests).

No PowerShell runs on Linux, so the loopback WS-Management responder and the loopback
OpenSSH server's forced command hand each agent request to this module: the transport,
framing, install and error paths are real; the answer comes from the twin. agent.ps1
answers the same requests on Windows (docs/agent-protocol.md).
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
