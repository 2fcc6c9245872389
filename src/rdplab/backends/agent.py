"""The agent backend: agent.ps1 on a Windows machine, reached over a transport.

One op batch or one gather is ONE command: the request goes on stdin, the JSON answer
comes back on stdout. The agent is installed once (``ensure_agent``), in chunks, and
checked by SHA-256, so a missing or stale agent is caught before any scenario runs.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from rdplab.agent import AGENT_PATH, PROTOCOL, agent_sha256, agent_source, commands
from rdplab.backends.base import Backend, CallLog
from rdplab.errors import BackendError
from rdplab.facts import Facts
from rdplab.ops import BatchResult, Op, OpResult, validate_op
from rdplab.transports.base import Transport

MAX_SHOWN = 300  # characters of unexpected output quoted in errors


class AgentBackend(Backend):
    def __init__(self, role: str, transport: Transport, calls: CallLog) -> None:
        super().__init__(role, calls)
        self.transport = transport
        self.journal: list[OpResult] = []  # every change made, with its backup

    @property
    def host(self) -> str:
        return self.transport.host

    # -- install ---------------------------------------------------------------------------
    def agent_state(self) -> str:
        """'current', 'missing' or 'stale' (one command)."""
        res = self.transport.run(commands.hash_command())
        text = res.stdout.decode("utf-8", "replace").strip()
        if res.rc != 0:
            raise BackendError(
                self.host, f"checking the agent failed (exit {res.rc}): {_short(res.stderr)}"
            )
        if text == "MISSING":
            return "missing"
        return "current" if text.upper() == agent_sha256() else "stale"

    def ensure_agent(
        self, install: bool = True, hint: str = "run with agent install enabled"
    ) -> str:
        """Make sure the current agent is at AGENT_PATH; return what was done. ``hint``:
        how the user enables the install, named when it is off and the agent is needed."""
        state = self.agent_state()
        if state == "current":
            return "agent current"
        if not install:
            raise BackendError(
                self.host,
                f"the rdplab agent at {AGENT_PATH} is {state}; {hint}",
            )
        import base64

        payload = base64.b64encode(agent_source()).decode()
        chunks = [payload[i : i + commands.CHUNK] for i in range(0, len(payload), commands.CHUNK)]
        for i, chunk in enumerate(chunks):
            res = self.transport.run(commands.chunk_command(i, chunk))
            if res.rc != 0:
                raise BackendError(
                    self.host, f"uploading the agent failed at chunk {i}: {_short(res.stderr)}"
                )
        res = self.transport.run(commands.finish_command())
        got = res.stdout.decode("utf-8", "replace").strip().upper()
        if res.rc != 0 or got != agent_sha256():
            raise BackendError(
                self.host, f"agent upload did not verify (hash {got[:16] or 'none'})"
            )
        return f"agent {state}: installed in {len(chunks)} chunk(s)"

    # -- calls ------------------------------------------------------------------------------
    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.record(self.role)
        req_id = uuid.uuid4().hex
        body = json.dumps({"rdplab_agent": PROTOCOL, "id": req_id, **request}).encode()
        res = self.transport.run(commands.call_command(), stdin=body)
        try:
            answer = json.loads(res.stdout.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BackendError(
                self.host,
                f"the agent answered something that is not JSON (exit {res.rc}):"
                f" {_short(res.stdout) or _short(res.stderr) or 'no output'}",
            ) from None
        if not isinstance(answer, dict) or answer.get("rdplab_agent") != PROTOCOL:
            raise BackendError(self.host, "the agent's answer is not an rdplab agent response")
        if answer.get("id") != req_id:
            raise BackendError(self.host, "the agent answered another request (id mismatch)")
        if answer.get("agent_version") not in (None, agent_sha256()):
            raise BackendError(self.host, "the agent on the machine is stale (version mismatch)")
        if res.rc != 0 and "results" not in answer:
            raise BackendError(
                self.host,
                f"the agent failed (exit {res.rc}): {answer.get('error') or _short(res.stderr)}",
            )
        return answer

    def apply(self, ops: list[Op]) -> BatchResult:
        for op in ops:
            validate_op(op)
        answer = self._call({"ops": [o.to_json() for o in ops]})
        raw = answer.get("results")
        if not isinstance(raw, list) or len(raw) > len(ops):
            raise BackendError(self.host, "the agent's results do not match the ops sent")
        try:
            results = [OpResult.from_json(r) for r in raw]
        except (KeyError, TypeError, ValueError):
            raise BackendError(self.host, "the agent's results are malformed") from None
        self.journal.extend(r for r in results if r.changed)
        return BatchResult(results)

    def gather(self, request: dict[str, Any] | None = None) -> Facts:
        answer = self._call({"gather": request or {}})
        return Facts.parse(self.host, answer.get("facts"))

    runs_powershell = True

    def run_script(self, script: str, parameters: tuple[str, ...] = ()) -> BatchResult:
        """Upload and run a PowerShell script in ONE command (``commands.script_command``).

        What it changed comes from its last output line, a JSON object with ``results``
        (what exported scripts print, the agent's batch answer). A script that prints no
        such line reports one result: ``script`` changed (exit 0) or failed."""
        self.calls.record(self.role)
        res = self.transport.run(
            commands.script_command(parameters), stdin=script.encode("utf-8-sig")
        )
        return script_results(self.host, res.rc, res.stdout, res.stderr)


def script_results(host: str, rc: int, stdout: bytes, stderr: bytes) -> BatchResult:
    """A script's results: its last output line when that is ``{"results": [...]}``."""
    text = stdout.decode("utf-8-sig", "replace").strip()
    last = text.splitlines()[-1] if text else ""
    try:
        answer = json.loads(last) if last.startswith("{") else None
    except json.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("results"), list):
        try:
            results = [OpResult.from_json(r) for r in answer["results"]]
        except (KeyError, TypeError, ValueError):
            raise BackendError(host, "the script's results line is malformed") from None
        if rc != 0 and not any(r.error for r in results):
            results.append(OpResult("script", False, "", error=f"exit {rc}: {_short(stderr)}"))
        return BatchResult(results)
    if rc != 0:
        return BatchResult(
            [OpResult("script", False, _short(stdout), error=f"exit {rc}: {_short(stderr)}")]
        )
    return BatchResult(
        [OpResult("script", True, "the script printed no results line; counted as a change")]
    )


def _short(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."
