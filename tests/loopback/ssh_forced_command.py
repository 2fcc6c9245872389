"""The loopback OpenSSH server's forced command: one simulated Windows machine.

sshd runs ``<python> ssh_forced_command.py <state dir>`` for every exec request the test
client makes (``command="..."`` in authorized_keys), with the client's command line in
``SSH_ORIGINAL_COMMAND``. Like the loopback WS-Management responder, it runs exactly the
command lines rdplab sends (``rdplab.agent.commands``): the hash check, the upload chunks
(``-EncodedCommand`` scripts, read with ``commands.decode``), the finish step and the agent
call, whose JSON request arrives on stdin and is answered by ``rdplab.agent.emulator``
with the SHA-256 of the uploaded agent, so a stale agent answers with a stale version.
Anything else gets cmd.exe's "is not recognized" answer.

The machine lives in the state directory (written by tests/loopback/ssh_server.py):

- ``config.json``   ``{"sys_path": [...], "baseline": ..., "computer_name": ...}``
- ``agent.ps1``     the uploaded agent (C:\\ProgramData\\rdplab\\agent.ps1)
- ``agent.ps1.b64`` the upload staging file
- ``twin.pickle``   the twin; built from the baseline on the first call when absent
- ``commands.log``  one JSON line per command: ``{"kind", "length", "stdin"}``
- knobs: ``garbage`` (the agent prints this file's bytes instead of JSON), ``fail_next``
  (the next command of the kind it names, or any kind when empty, exits 1 with stderr;
  the file is removed), ``delay`` (seconds to sleep before answering)

The exit status is the emulator's (0, 1 or 2), 64 for a missing agent file (PowerShell's
-File error), 1 for cmd.exe's errors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import re
import sys
import time
from pathlib import Path
from typing import Any

CMD_LIMIT = 8191  # cmd.exe: the longest command line it runs
CHUNK_RE = re.compile(
    r"\[IO\.File\]::(WriteAllText|AppendAllText)\('[^']*', '([A-Za-z0-9+/=]*)'\)$"
)
GARBAGE = b"Windows PowerShell\r\nWARNING: something odd <b>happened</b>\r\n"


def sha256_upper(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


def classify(line: str) -> str:
    """hash | chunk | finish | call | script | other: exactly the lines rdplab.agent.commands
    builds."""
    from rdplab.agent import commands

    if line == commands.call_command():
        return "call"
    if line == commands.hash_command():
        return "hash"
    if line == commands.finish_command():
        return "finish"
    if commands.script_parameters(line) is not None:
        return "script"
    script = commands.decode(line) if "-EncodedCommand " in line else None
    if script is not None:
        m = CHUNK_RE.search(script)
        if m is not None:
            index = 0 if m.group(1) == "WriteAllText" else 1
            if commands.chunk_command(index, m.group(2)) == line:
                return "chunk"
    return "other"


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _ps_error(message: str) -> bytes:
    return f"Exception calling method: {message}\r\n".encode()


class Machine:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.config: dict[str, Any] = json.loads((state / "config.json").read_text())
        self.agent = state / "agent.ps1"
        self.staging = state / "agent.ps1.b64"
        self.twin_file = state / "twin.pickle"

    def execute(self, kind: str, line: str, stdin: bytes) -> tuple[int, bytes, bytes]:
        """What cmd.exe/powershell.exe would print for one of rdplab's command lines."""
        if len(line) > CMD_LIMIT:
            return 1, b"", b"The command line is too long.\r\n"
        agent = self.agent.read_bytes() if self.agent.exists() else None
        if kind == "hash":
            return (
                0,
                (sha256_upper(agent) if agent is not None else "MISSING").encode() + b"\r\n",
                b"",
            )
        if kind == "chunk":
            from rdplab.agent import commands

            m = CHUNK_RE.search(commands.decode(line) or "")
            assert m is not None
            mode = "wb" if m.group(1) == "WriteAllText" else "ab"
            with self.staging.open(mode) as f:
                f.write(m.group(2).encode())
            return 0, b"", b""
        if kind == "finish":
            from rdplab.agent import commands

            if not self.staging.exists():
                return 1, b"", _ps_error(f"Could not find file '{commands.STAGING}'.")
            try:
                content = base64.b64decode(self.staging.read_bytes(), validate=True)
            except ValueError:
                return 1, b"", _ps_error("The input is not a valid Base-64 string.")
            _write(self.agent, content)
            self.staging.unlink()
            return 0, sha256_upper(content).encode() + b"\r\n", b""
        if kind == "call":
            return self.call(agent, stdin)
        if kind == "script":
            from rdplab.agent import commands, emulator

            twin = self.load_twin()
            params = commands.script_parameters(line) or ()
            rc, out, err = emulator.handle_script(twin, stdin, params)
            _write(self.twin_file, pickle.dumps(twin))
            return rc, out, err
        if line.strip().lower() == "hostname":  # cmd.exe's hostname (for testinfra hosts)
            return 0, self.load_twin().computer.name.encode() + b"\r\n", b""
        name = line.split(" ", 1)[0]
        return (
            1,
            b"",
            (
                f"'{name}' is not recognized as an internal or external command,\r\n"
                "operable program or batch file.\r\n"
            ).encode(),
        )

    def call(self, agent: bytes | None, stdin: bytes) -> tuple[int, bytes, bytes]:
        from rdplab.agent import AGENT_PATH, emulator

        if agent is None:
            return (
                64,
                b"",
                (
                    f"The argument '{AGENT_PATH}' to the -File parameter does not exist. Provide"
                    " the path to an existing '.ps1' file as an argument to the -File"
                    " parameter.\r\n"
                ).encode(),
            )
        garbage = self.state / "garbage"
        if garbage.exists():
            return 0, garbage.read_bytes() or GARBAGE, b""
        twin = self.load_twin()
        rc, out, err = emulator.handle(twin, stdin, agent_version=sha256_upper(agent))
        _write(self.twin_file, pickle.dumps(twin))
        return rc, out, err

    def load_twin(self) -> Any:
        if self.twin_file.exists():
            return pickle.loads(self.twin_file.read_bytes())
        from rdplab.baselines import build_twin

        twin = build_twin(self.config["baseline"], self.config["computer_name"])
        twin.http_reach = frozenset().__contains__  # nothing answers HTTP (and it pickles)
        return twin

    def knobs(self, kind: str) -> tuple[int, bytes, bytes] | None:
        delay = self.state / "delay"
        if delay.exists():
            time.sleep(float(delay.read_text() or "0"))
        fail = self.state / "fail_next"
        if fail.exists() and fail.read_text().strip() in ("", kind):
            fail.unlink()
            return 1, b"", _ps_error("Access to the path is denied.")
        return None


def main(argv: list[str]) -> int:
    state = Path(argv[1])
    machine = Machine(state)
    for p in reversed(machine.config.get("sys_path", [])):
        if p not in sys.path:
            sys.path.insert(0, p)
    line = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    kind = classify(line)
    stdin = sys.stdin.buffer.read() if kind in ("call", "script") else b""
    entry = {"kind": kind, "length": len(line), "stdin": len(stdin)}
    with (state / "commands.log").open("a") as log:
        log.write(json.dumps(entry) + "\n")
    rc, out, err = machine.knobs(kind) or machine.execute(kind, line, stdin)
    sys.stdout.buffer.write(out)
    sys.stderr.buffer.write(err)
    sys.stdout.flush()
    sys.stderr.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
