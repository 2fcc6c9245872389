"""A loopback WS-Management responder: enough of WinRM's shell protocol for pywinrm.

A real HTTP(S) server on 127.0.0.1 (a free port, one thread per connection) answers
Create (shell), Command, Send (stdin), Receive (output split over several answers),
Signal (terminate) and Delete. It authenticates with Basic, or with NTLM (pyspnego as the
acceptor) including WinRM's NTLM message encryption over http (multipart/encrypted,
[MS-WSMV] 2.2.9.1.1), as a Windows host does by default. Behind it sits one simulated
Windows machine: a tiny file system (the agent and its upload staging file) and a twin.

It runs exactly the command lines rdplab sends (``rdplab.agent.commands``): the hash
check, the upload chunks, the finish step and the agent call. The call hands stdin to
``rdplab.agent.emulator.handle`` with the SHA-256 of the agent file it holds, so a stale
agent answers with a stale version, as agent.ps1 would. Anything else gets cmd.exe's
"is not recognized" answer, and a line over cmd.exe's 8191 characters is refused.

Knobs for the error paths: ``password`` (wrong credentials: 401), ``garbage`` (the agent
prints something that is not JSON), ``delay`` (Receive answers late: client timeout),
``fail_next`` (the next command exits nonzero with stderr), ``receive_timeouts`` (Receive
answers WinRM's operation-timeout fault that many times first), ``receive_chunk`` (bytes
per stream per Receive). Counters: ``command_lines``/``kinds`` (every Command),
``receives``, ``sends``, ``shells_opened``/``shells_closed``, ``sealed_requests``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.server
import ipaddress
import os
import re
import ssl
import struct
import tempfile
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import rdplab.agent
from rdplab.agent import AGENT_PATH, commands, emulator
from rdplab.baselines import build_twin
from rdplab.twin import Twin

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
ACTIONS = {
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create": "create",
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete": "delete",
    SHELL_URI + "/Command": "command",
    SHELL_URI + "/Send": "send",
    SHELL_URI + "/Receive": "receive",
    SHELL_URI + "/Signal": "signal",
}
CMD_LIMIT = 8191  # cmd.exe: the longest command line it runs
MAX_ENVELOPE = 153600  # WinRM's default MaxEnvelopeSizekb (150) in bytes
FAULT_TIMEOUT = 2150858793  # "The WS-Management service cannot complete the operation within
# the time specified in OperationTimeout": the command is still running
FAULT_NO_SHELL = 2150858843
STAGING = commands.STAGING
_CHUNK_RE = re.compile(
    r"\[IO\.File\]::(WriteAllText|AppendAllText)\('[^']*', '([A-Za-z0-9+/=]*)'\)$"
)


def agent_bytes() -> bytes:
    """The agent rdplab would upload (read at call time: tests may patch rdplab.agent)."""
    return rdplab.agent.agent_source()


def sha256_upper(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


@dataclass
class Command:
    id: str
    line: str
    kind: str
    stdin: bytearray = field(default_factory=bytearray)
    stdin_done: bool = False
    ran: bool = False
    rc: int = 0
    out: list[bytes] = field(default_factory=list)  # stdout pieces still to deliver
    err: list[bytes] = field(default_factory=list)
    receives: int = 0
    timeouts_left: int = 0


@dataclass
class Shell:
    id: str
    codepage: str = "437"
    commands: dict[str, Command] = field(default_factory=dict)


class Responder:
    """One simulated Windows machine behind a WinRM endpoint on 127.0.0.1."""

    def __init__(
        self,
        username: str = "labadmin",
        password: str = "S3cret-Lab-Pa55!",
        baseline: str = "windows-server-2022",
        computer_name: str = "HOST",
        twin: Twin | None = None,
        tls_dir: Path | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.twin = twin or build_twin(baseline, computer_name)
        self.files: dict[str, bytes] = {}  # lower-cased Windows path -> content
        self.shells: dict[str, Shell] = {}
        # knobs
        self.garbage = False
        self.delay = 0.0
        self.fail_next: tuple[int, bytes] | None = None
        self.receive_timeouts = 0
        self.receive_chunk = 8192
        # counters
        self.command_lines: list[str] = []
        self.kinds: Counter[str] = Counter()
        self.receives = 0
        self.sends = 0
        self.signals = 0
        self.shells_opened = 0
        self.shells_closed = 0
        self.last_command: Command | None = None
        self.auth_failures = 0
        self.sealed_requests = 0  # NTLM-encrypted SOAP messages
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._tls_dir = tls_dir
        self.ca_path: str | None = None
        self._ntlm_file: str | None = None
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "responder not started"
        return int(self._server.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self._tls_dir else "http"

    def start(self) -> Responder:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.responder = self  # type: ignore[attr-defined]
        if self._tls_dir is not None:
            cert, key, self.ca_path = _make_tls(self._tls_dir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            server.socket = ctx.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        if self._ntlm_file is not None:
            os.unlink(self._ntlm_file)
            self._ntlm_file = None

    def __enter__(self) -> Responder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- machine state --------------------------------------------------------------------------
    def install_agent(self, content: bytes | None = None) -> None:
        """Put an agent file in place: the current one by default, else ``content`` (stale)."""
        with self._lock:
            self.files[AGENT_PATH.lower()] = agent_bytes() if content is None else content

    def remove_agent(self) -> None:
        with self._lock:
            self.files.pop(AGENT_PATH.lower(), None)

    def agent_file(self) -> bytes | None:
        return self.files.get(AGENT_PATH.lower())

    def reset_counters(self) -> None:
        with self._lock:
            self.command_lines.clear()
            self.kinds.clear()
            self.receives = self.sends = self.signals = 0
            self.last_command = None

    @property
    def command_count(self) -> int:
        return len(self.command_lines)

    # -- authentication ------------------------------------------------------------------------
    def ntlm_context(self) -> Any:
        """A server-side NTLM context (pyspnego) that knows only this responder's user."""
        import spnego

        with _ENV_LOCK, self._ntlm_store():
            return spnego.server(protocol="ntlm")

    def ntlm_step(self, ctx: Any, token: bytes) -> bytes | None:
        """Feed one client token; the challenge to send back, or None once authenticated."""
        with _ENV_LOCK, self._ntlm_store():
            out: bytes | None = ctx.step(token)
        if ctx.complete:
            return None
        assert out is not None
        return out

    @contextmanager
    def _ntlm_store(self) -> Iterator[None]:
        # pyspnego's NTLM acceptor reads its users from the file named by NTLM_USER_FILE
        if self._ntlm_file is None:
            fd, name = tempfile.mkstemp(prefix="rdplab-ntlm-", suffix=".txt")
            with os.fdopen(fd, "w") as f:
                f.write(f":{self.username}:{self.password}\n")
            self._ntlm_file = name
        old = os.environ.get("NTLM_USER_FILE")
        os.environ["NTLM_USER_FILE"] = self._ntlm_file
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("NTLM_USER_FILE", None)
            else:
                os.environ["NTLM_USER_FILE"] = old

    # -- WS-Management ---------------------------------------------------------------------------
    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.username and password == self.password

    def handle(self, body: bytes, host: str) -> tuple[int, str]:
        """One SOAP request -> (HTTP status, SOAP answer)."""
        if len(body) > MAX_ENVELOPE:
            return _fault("", 2150858817, "The request exceeds MaxEnvelopeSize")
        root = ET.fromstring(body)
        action_el = root.find("s:Header/a:Action", NS)
        message_id = _text(root.find("s:Header/a:MessageID", NS))
        action = ACTIONS.get(_text(action_el))
        if action is None:
            return _fault(message_id, 2150858778, f"unsupported action {_text(action_el)!r}")
        if action == "create":
            return self._create(root, message_id, host)
        shell_id = _text(root.find("s:Header/w:SelectorSet/w:Selector[@Name='ShellId']", NS))
        with self._lock:
            shell = self.shells.get(shell_id)
        if shell is None:
            return _fault(message_id, FAULT_NO_SHELL, f"the shell {shell_id} was not found")
        if action == "delete":
            with self._lock:
                self.shells.pop(shell_id, None)
                self.shells_closed += 1
            return 200, _envelope(SCHEMA_DELETE_RESPONSE, message_id, "")
        if action == "command":
            return self._command(shell, root, message_id)
        body_el = root.find("s:Body", NS)
        assert body_el is not None
        if action == "send":
            stream = body_el.find("rsp:Send/rsp:Stream", NS)
            assert stream is not None
            cmd = shell.commands.get(stream.get("CommandId", ""))
            if cmd is None:
                return _fault(message_id, 2150858843, "unknown CommandId")
            with self._lock:
                self.sends += 1
                cmd.stdin += base64.b64decode(stream.text or "")
                cmd.stdin_done = stream.get("End", "false").lower() == "true"
            return 200, _envelope(SHELL_URI + "/SendResponse", message_id, "<rsp:SendResponse/>")
        if action == "receive":
            desired = body_el.find("rsp:Receive/rsp:DesiredStream", NS)
            assert desired is not None
            cmd = shell.commands.get(desired.get("CommandId", ""))
            if cmd is None:
                return _fault(message_id, 2150858843, "unknown CommandId")
            return self._receive(cmd, message_id)
        # signal
        signal = body_el.find("rsp:Signal", NS)
        assert signal is not None
        with self._lock:
            self.signals += 1
            shell.commands.pop(signal.get("CommandId", ""), None)
        return 200, _envelope(SHELL_URI + "/SignalResponse", message_id, "<rsp:SignalResponse/>")

    def _create(self, root: ET.Element, message_id: str, host: str) -> tuple[int, str]:
        codepage = "437"
        for opt in root.findall("s:Header/w:OptionSet/w:Option", NS):
            if opt.get("Name") == "WINRS_CODEPAGE":
                codepage = _text(opt)
        shell = Shell(str(uuid.uuid4()).upper(), codepage)
        with self._lock:
            self.shells[shell.id] = shell
            self.shells_opened += 1
        body = (
            "<x:ResourceCreated>"
            f"<a:Address>{self.scheme}://{escape(host)}/wsman</a:Address>"
            "<a:ReferenceParameters>"
            f"<w:ResourceURI>{SHELL_URI}/cmd</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell.id}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters></x:ResourceCreated>"
            f"<rsp:Shell><rsp:ShellId>{shell.id}</rsp:ShellId>"
            f"<rsp:ResourceUri>{SHELL_URI}/cmd</rsp:ResourceUri>"
            "<rsp:InputStreams>stdin</rsp:InputStreams>"
            "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>"
        )
        return 200, _envelope(
            "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", message_id, body
        )

    def _command(self, shell: Shell, root: ET.Element, message_id: str) -> tuple[int, str]:
        line_el = root.find("s:Body/rsp:CommandLine", NS)
        assert line_el is not None
        line = _text(line_el.find("rsp:Command", NS))
        args = _text(line_el.find("rsp:Arguments", NS))
        if args:
            line = f"{line} {args}"
        cmd = Command(str(uuid.uuid4()).upper(), line, classify(line))
        with self._lock:
            self.command_lines.append(line)
            self.kinds[cmd.kind] += 1
            self.last_command = cmd
            cmd.timeouts_left = self.receive_timeouts
            if self.fail_next is not None:
                rc, err = self.fail_next
                self.fail_next = None
                self._output(cmd, rc, b"", err)
            shell.commands[cmd.id] = cmd
        body = f"<rsp:CommandResponse><rsp:CommandId>{cmd.id}</rsp:CommandId></rsp:CommandResponse>"
        return 200, _envelope(SHELL_URI + "/CommandResponse", message_id, body)

    def _receive(self, cmd: Command, message_id: str) -> tuple[int, str]:
        with self._lock:
            self.receives += 1
            cmd.receives += 1
            delay = self.delay
        if delay and self._stopping.wait(delay):
            return 503, ""
        with self._lock:
            if cmd.timeouts_left > 0:
                cmd.timeouts_left -= 1
                return _fault(message_id, FAULT_TIMEOUT, "The operation timed out")
            if not cmd.ran:
                self._run(cmd)
            out = cmd.out.pop(0) if cmd.out else b""
            err = cmd.err.pop(0) if cmd.err else b""
            done = not cmd.out and not cmd.err
        end = ' End="true"' if done else ""
        streams = "".join(
            f'<rsp:Stream Name="{name}" CommandId="{cmd.id}"{end}>'
            f"{base64.b64encode(data).decode()}</rsp:Stream>"
            for name, data in (("stdout", out), ("stderr", err))
            if data or done
        )
        state = "Done" if done else "Running"
        exit_code = f"<rsp:ExitCode>{cmd.rc}</rsp:ExitCode>" if done else ""
        body = (
            f'<rsp:ReceiveResponse SequenceID="{cmd.receives - 1}">{streams}'
            f'<rsp:CommandState CommandId="{cmd.id}"'
            f' State="{SHELL_URI}/CommandState/{state}">{exit_code}</rsp:CommandState>'
            "</rsp:ReceiveResponse>"
        )
        return 200, _envelope(SHELL_URI + "/ReceiveResponse", message_id, body)

    # -- the machine ------------------------------------------------------------------------------
    def _output(self, cmd: Command, rc: int, out: bytes, err: bytes) -> None:
        n = max(1, self.receive_chunk)
        cmd.ran = True
        cmd.rc = rc
        cmd.out = [out[i : i + n] for i in range(0, len(out), n)]
        cmd.err = [err[i : i + n] for i in range(0, len(err), n)]

    def _run(self, cmd: Command) -> None:
        rc, out, err = self.execute(cmd.line, bytes(cmd.stdin) if cmd.stdin_done else b"")
        self._output(cmd, rc, out, err)

    def execute(self, line: str, stdin: bytes) -> tuple[int, bytes, bytes]:
        """What cmd.exe/powershell.exe would print for one of rdplab's command lines."""
        if len(line) > CMD_LIMIT:
            return 1, b"", b"The command line is too long.\r\n"
        kind = classify(line)
        agent = self.agent_file()
        if kind == "hash":
            return (
                0,
                (sha256_upper(agent) if agent is not None else "MISSING").encode() + b"\r\n",
                b"",
            )
        if kind == "chunk":
            script = commands.decode(line) or ""
            m = _CHUNK_RE.search(script)
            assert m is not None
            old = b"" if m.group(1) == "WriteAllText" else self.files.get(STAGING.lower(), b"")
            self.files[STAGING.lower()] = old + m.group(2).encode()
            return 0, b"", b""
        if kind == "finish":
            staged = self.files.pop(STAGING.lower(), None)
            if staged is None:
                return 1, b"", _ps_error(f"Could not find file '{STAGING}'.")
            try:
                content = base64.b64decode(staged, validate=True)
            except ValueError:
                return 1, b"", _ps_error("The input is not a valid Base-64 string.")
            self.files[AGENT_PATH.lower()] = content
            return 0, sha256_upper(content).encode() + b"\r\n", b""
        if kind == "call":
            if agent is None:
                missing = (
                    f"The argument '{AGENT_PATH}' to the -File parameter does not exist."
                    " Provide the path to an existing '.ps1' file as an argument to the -File"
                    " parameter.\r\n"
                )
                return 64, b"", missing.encode()
            if self.garbage:
                return 0, b"Windows PowerShell\r\nWARNING: something odd <b>happened</b>\r\n", b""
            return emulator.handle(self.twin, stdin, agent_version=sha256_upper(agent))
        if kind == "script":  # an exported remediation script, answered from the twin
            params = commands.script_parameters(line) or ()
            return emulator.handle_script(self.twin, stdin, params)
        if line.strip().lower() == "hostname":  # cmd.exe's hostname (for testinfra hosts)
            return 0, self.twin.computer.name.encode() + b"\r\n", b""
        name = line.split(" ", 1)[0]
        return (
            1,
            b"",
            (
                f"'{name}' is not recognized as an internal or external command,\r\n"
                "operable program or batch file.\r\n"
            ).encode(),
        )


def classify(line: str) -> str:
    """hash | chunk | finish | call | script | other: exactly the lines rdplab.agent.commands
    builds."""
    if line == commands.call_command():
        return "call"
    if line == commands.hash_command():
        return "hash"
    if line == commands.finish_command():
        return "finish"
    if commands.script_parameters(line) is not None:
        return "script"
    script = commands.decode(line)
    if script is not None:
        m = _CHUNK_RE.search(script)
        if m is not None:
            index = 0 if m.group(1) == "WriteAllText" else 1
            if commands.chunk_command(index, m.group(2)) == line:
                return "chunk"
    return "other"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as WinRM clients expect (NTLM needs it)
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "Microsoft-HTTPAPI/2.0"
    ntlm: Any = None  # this connection's NTLM context (NTLM authenticates connections)
    ntlm_ok = False

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        responder: Responder = self.server.responder  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path.rstrip("/").lower() != "/wsman":
            self._reply(404, b"", "text/plain")
            return
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() in ("negotiate", "ntlm") and token:
            if self.ntlm is None or self.ntlm_ok:
                self.ntlm, self.ntlm_ok = responder.ntlm_context(), False
            try:
                challenge = responder.ntlm_step(self.ntlm, base64.b64decode(token))
            except Exception:  # wrong user or password
                self.ntlm = None
                self._deny(responder, offer=False, failed=True)
                return
            if challenge is not None:
                self._deny(responder, f"{scheme} {base64.b64encode(challenge).decode()}")
                return
            self.ntlm_ok = True
        elif scheme.lower() == "basic":
            self.ntlm, self.ntlm_ok = None, False
            if not responder.authorized(self.headers.get("Authorization")):
                self._deny(responder, failed=True)
                return
        elif not self.ntlm_ok:
            self._deny(responder)
            return
        sealed = self.ntlm_ok and "multipart/encrypted" in self.headers.get("Content-Type", "")
        if sealed:
            with responder._lock:
                responder.sealed_requests += 1
        if not body:  # pywinrm's empty POST that sets up NTLM message encryption
            self._reply(200, b"", "application/soap+xml;charset=UTF-8")
            return
        try:
            if sealed:
                body = ntlm_unwrap(self.ntlm, body)
            status, answer = responder.handle(body, self.headers.get("Host", ""))
        except Exception as exc:  # a malformed request: a SOAP fault, like WinRM
            status, answer = _fault("", 2150858778, f"{type(exc).__name__}: {exc}")
        if status == 503:
            self.close_connection = True
        if sealed:
            self._reply(status, ntlm_wrap(self.ntlm, answer.encode()), ENCRYPTED_TYPE)
        else:
            self._reply(status, answer.encode(), "application/soap+xml;charset=UTF-8")

    def _deny(
        self,
        responder: Responder,
        challenge: str | None = None,
        offer: bool = True,
        failed: bool = False,
    ) -> None:
        """401: ask for credentials, continue an NTLM handshake, or refuse wrong ones."""
        if failed:
            with responder._lock:
                responder.auth_failures += 1
        self.send_response(401)
        if challenge:
            self.send_header("WWW-Authenticate", challenge)
        elif offer:
            self.send_header("WWW-Authenticate", "Negotiate")
            self.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _reply(self, status: int, data: bytes, ctype: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True  # the client gave up (timeout): fine


BOUNDARY = b"--Encrypted Boundary"
SPNEGO_ENCRYPTED = b"application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_TYPE = (
    f'multipart/encrypted;protocol="{SPNEGO_ENCRYPTED.decode()}";boundary="Encrypted Boundary"'
)
_ENV_LOCK = threading.Lock()


def ntlm_unwrap(ctx: Any, body: bytes) -> bytes:
    """[MS-WSMV] 2.2.9.1.1: one multipart/encrypted SOAP message, sealed by NTLM."""
    parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
    expected = int(parts[0].split(b"Length=")[1].strip())
    payload = parts[1].removesuffix(BOUNDARY + b"--\r\n")
    data = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
    size = struct.unpack("<i", data[:4])[0]
    message: bytes = ctx.unwrap_winrm(data[4 : 4 + size], data[4 + size :])
    if len(message) != expected:
        raise ValueError("encrypted message length does not match")
    return message


def ntlm_wrap(ctx: Any, message: bytes) -> bytes:
    wrapped = ctx.wrap_winrm(message)
    header: bytes = wrapped.header
    sealed: bytes = wrapped.data
    return (
        BOUNDARY + b"\r\n\tContent-Type: " + SPNEGO_ENCRYPTED + b"\r\n"
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
        + str(len(message)).encode()
        + b"\r\n"
        + BOUNDARY
        + b"\r\n\tContent-Type: application/octet-stream\r\n"
        + struct.pack("<i", len(header))
        + header
        + sealed
        + BOUNDARY
        + b"--\r\n"
    )


SCHEMA_DELETE_RESPONSE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse"


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _envelope(action: str, relates_to: str, body: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xml:lang="en-US" xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}"'
        f' xmlns:x="{NS["x"]}" xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}">'
        f"<s:Header><a:Action>{action}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo></s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )


def _fault(relates_to: str, code: int, message: str) -> tuple[int, str]:
    body = (
        "<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode>"
        "<s:Value>w:TimedOut</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(message)}</s:Text></s:Reason>'
        f'<s:Detail><f:WSManFault xmlns:f="{NS["f"]}" Code="{code}" Machine="127.0.0.1">'
        f"<f:Message>{escape(message)}</f:Message></f:WSManFault></s:Detail></s:Fault>"
    )
    return 500, _envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to, body)


def _ps_error(message: str) -> bytes:
    return f'Exception calling "Run" with "0" argument(s): "{message}"\r\n'.encode()


def _make_tls(directory: Path) -> tuple[str, str, str]:
    """A lab CA and a server certificate for 127.0.0.1 (files in ``directory``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rdplab loopback CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "server.pem", directory / "server.key", directory / "ca.pem"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return str(paths[0]), str(paths[1]), str(paths[2])


@contextmanager
def responder(**kwargs: Any) -> Iterator[Responder]:
    """A started responder, stopped on exit."""
    r = Responder(**kwargs)
    r.start()
    try:
        yield r
    finally:
        r.stop()
