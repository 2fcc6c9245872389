"""WinRM (WS-Management) transport over pywinrm.

One shell per transport: ``open`` creates it, every ``run`` is one WS-Management Command in
it (stdin sent with Send, output collected with as many Receive calls as the machine needs),
``close`` deletes it. pywinrm is imported in ``open``; rdplab's core does not need it.

Authentication: ``ntlm`` (default; messages are encrypted by NTLM over http), ``basic``
(only over https, or over http when ``allow_plaintext_basic`` says so: the password travels
in the clear) and ``ssl`` (https, Basic inside TLS, port 5986). Over https the server
certificate is validated unless ``validate_server_cert=False`` is passed explicitly;
``ca_trust_path`` names a CA bundle for lab certificates.

Errors are ``BackendError(host, ...)``; the password is never part of a message, a repr or
a log line (every message is scrubbed before it is raised).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import socket
import time
from typing import TYPE_CHECKING, Literal, cast

from rdplab.errors import BackendError, ProviderError
from rdplab.secret import Secret
from rdplab.transports.base import CommandResult, Transport

if TYPE_CHECKING:
    from winrm.protocol import Protocol

Auth = Literal["ntlm", "basic", "ssl"]
AUTHS: tuple[str, ...] = ("ntlm", "basic", "ssl")
# WinRM's "operation timed out" fault on Receive: the command is still running.
_RECEIVE_TIMEOUT_FAULT = 2150858793


class WinRMTransport(Transport):
    """A WinRM shell on one Windows machine.

    ``read_timeout`` bounds every HTTP exchange (connect and answer);
    ``operation_timeout`` is the WS-Management OperationTimeout (must be smaller; a Receive
    that times out on the server is retried); ``command_timeout`` bounds one whole command.
    """

    #: bytes of stdin per WS-Management Send (far below MaxEnvelopeSize once base64'd)
    STDIN_CHUNK = 32 * 1024

    def __init__(
        self,
        host: str,
        port: int | None = None,
        username: str = "",
        password: str = "",
        auth: Auth = "ntlm",
        *,
        scheme: Literal["http", "https"] | None = None,
        validate_server_cert: bool = True,
        ca_trust_path: str | None = None,
        allow_plaintext_basic: bool = False,
        read_timeout: int = 30,
        operation_timeout: int = 20,
        command_timeout: float = 600.0,
        codepage: int = 65001,
    ) -> None:
        super().__init__(host)
        if auth not in AUTHS:
            raise ProviderError(f"{host}: unknown WinRM auth {auth!r} (known: {', '.join(AUTHS)})")
        if scheme is None:
            scheme = "https" if auth == "ssl" else "http"
        if scheme not in ("http", "https"):
            raise ProviderError(f"{host}: WinRM scheme must be http or https, not {scheme!r}")
        if auth == "ssl" and scheme != "https":
            raise ProviderError(f"{host}: WinRM auth 'ssl' needs https")
        if auth == "basic" and scheme == "http" and not allow_plaintext_basic:
            raise ProviderError(
                f"{host}: Basic authentication over http sends the password in the clear;"
                " use https (auth 'ssl'), NTLM, or pass allow_plaintext_basic=True for a"
                " loopback or isolated lab network"
            )
        if not username:
            raise ProviderError(f"{host}: WinRM needs a username")
        if not 1 <= operation_timeout < read_timeout:
            raise ProviderError(
                f"{host}: WinRM read_timeout ({read_timeout}s) must exceed operation_timeout"
                f" ({operation_timeout}s), and both must be at least 1s"
            )
        self.port = port or (5986 if scheme == "https" else 5985)
        self.scheme = scheme
        self.username = username
        self._password = Secret(password)
        self.auth: Auth = auth
        self.validate_server_cert = validate_server_cert
        self.ca_trust_path = ca_trust_path
        self.read_timeout = int(read_timeout)
        self.operation_timeout = int(operation_timeout)
        self.command_timeout = float(command_timeout)
        self.codepage = codepage
        self._protocol: Protocol | None = None
        self._shell: str | None = None

    # -- identity ----------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/wsman"

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __repr__(self) -> str:
        return (
            f"WinRMTransport(endpoint={self.endpoint!r}, username={self.username!r},"
            f" auth={self.auth!r}, commands={self.commands})"
        )

    # -- session -----------------------------------------------------------------------------
    def open(self) -> None:
        if self._shell is not None:
            return
        try:
            from winrm.protocol import Protocol
        except ImportError:
            raise ProviderError(
                "the WinRM transport needs pywinrm: pip install 'rdplab[real]' (pywinrm)"
            ) from None
        try:
            protocol = Protocol(
                endpoint=self.endpoint,
                transport=self.auth,
                username=self.username,
                password=self._password.reveal(),
                server_cert_validation="validate" if self.validate_server_cert else "ignore",
                ca_trust_path=cast(str, self.ca_trust_path),  # None: only the default CA bundle
                read_timeout_sec=self.read_timeout,
                operation_timeout_sec=self.operation_timeout,
                proxy=None,  # a lab machine is dialled directly, never via $HTTP_PROXY
            )
        except Exception as exc:
            raise self._error(exc, "setting up WinRM") from None
        try:
            self._shell = protocol.open_shell(codepage=self.codepage, noprofile=True)
        except Exception as exc:
            protocol.transport.close_session()
            raise self._error(exc, "opening a shell") from None
        self._protocol = protocol

    def close(self) -> None:
        protocol, shell = self._protocol, self._shell
        self._protocol = self._shell = None  # drops pywinrm's copy of the password too
        if protocol is None:
            return
        try:
            if shell is not None:
                protocol.close_shell(shell)  # closes the HTTP session as well
        except Exception:
            pass  # best effort: an abandoned shell times out on the server
        finally:
            protocol.transport.close_session()

    # -- commands ----------------------------------------------------------------------------
    def run(self, command: str, stdin: bytes | None = None) -> CommandResult:
        if self._protocol is None or self._shell is None:
            raise BackendError(self.host, "the WinRM transport is not open")
        protocol, shell = self._protocol, self._shell
        self.commands += 1
        try:
            command_id = protocol.run_command(shell, command, console_mode_stdin=stdin is None)
        except Exception as exc:
            raise self._error(exc, "starting a command") from None
        try:
            if stdin is not None:
                self._send(protocol, shell, command_id, stdin)
            stdout, stderr, rc = self._receive(protocol, shell, command_id)
        except Exception as exc:
            if not _is_network(exc):  # the shell still answers: stop the command there
                with contextlib.suppress(Exception):  # the first error is the one to report
                    protocol.cleanup_command(shell, command_id)
            raise self._error(exc, "running a command") from None
        self._cleanup(protocol, shell, command_id)
        return CommandResult(rc, stdout, stderr)

    def _send(self, protocol: Protocol, shell: str, command_id: str, data: bytes) -> None:
        size = self.STDIN_CHUNK
        pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        for i, piece in enumerate(pieces):
            protocol.send_command_input(shell, command_id, piece, end=i == len(pieces) - 1)

    def _receive(self, protocol: Protocol, shell: str, command_id: str) -> tuple[bytes, bytes, int]:
        """pywinrm's get_command_output loop, with an overall deadline."""
        from winrm.exceptions import WinRMOperationTimeoutError

        deadline = time.monotonic() + self.command_timeout
        out: list[bytes] = []
        err: list[bytes] = []
        while True:
            try:
                o, e, rc, done = protocol.get_command_output_raw(shell, command_id)
            except WinRMOperationTimeoutError:
                o, e, rc, done = b"", b"", -1, False
            out.append(o)
            err.append(e)
            if done:
                return b"".join(out), b"".join(err), rc
            if time.monotonic() > deadline:
                raise _CommandTimeoutError(self.command_timeout)

    def _cleanup(self, protocol: Protocol, shell: str, command_id: str) -> None:
        try:
            protocol.cleanup_command(shell, command_id)
        except Exception as exc:
            raise self._error(exc, "ending a command") from None

    # -- errors ------------------------------------------------------------------------------
    def _error(self, exc: BaseException, doing: str) -> BackendError:
        return BackendError(self.host, self._scrub(self._describe(exc, doing)))

    def _describe(self, exc: BaseException, doing: str) -> str:
        import requests
        from winrm import exceptions as wx

        if isinstance(exc, _CommandTimeoutError):
            return f"timed out after {exc.seconds:g}s waiting for a command to finish"
        if isinstance(exc, wx.AuthenticationError):
            return f"authentication failed for user {self.username} ({self.auth} at {self.where})"
        if isinstance(exc, requests.exceptions.Timeout):
            phase = "connecting to" if isinstance(exc, requests.exceptions.ConnectTimeout) else ""
            what = f"{phase} {self.where}" if phase else f"an answer from {self.where}"
            return f"timed out after {self.read_timeout}s waiting for {what} ({doing})"
        if isinstance(exc, requests.exceptions.SSLError):
            return (
                f"cannot reach {self.where} (TLS: {_tls_reason(exc)}; set ca_trust_path to the"
                " lab CA bundle)"
            )
        if isinstance(exc, requests.exceptions.ConnectionError):
            return f"cannot reach {self.where} ({_net_reason(exc)})"
        if isinstance(exc, wx.WSManFaultError):
            code = f", WSMan code {exc.wsman_fault_code}" if exc.wsman_fault_code else ""
            return f"WinRM fault while {doing}: {exc.reason} (HTTP {exc.code}{code})"
        if isinstance(exc, wx.WinRMTransportError):
            return f"WinRM answered HTTP {exc.code} while {doing}"
        if isinstance(exc, wx.WinRMError):
            return f"WinRM error while {doing}: {exc}"
        if isinstance(exc, requests.exceptions.RequestException):
            return f"HTTP error while {doing} with {self.where}: {type(exc).__name__}"
        return f"unexpected WinRM answer while {doing} ({type(exc).__name__})"

    def _scrub(self, text: str) -> str:
        secret = self._password.reveal()
        if not secret:
            return text
        basic = base64.b64encode(f"{self.username}:{secret}".encode()).decode()
        for s in (basic, secret):
            text = text.replace(s, "***")
        return text


class _CommandTimeoutError(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"command timed out after {seconds:g}s")
        self.seconds = seconds


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, *(a for a in e.args if isinstance(a, BaseException))]
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    return seen


def _net_reason(exc: BaseException) -> str:
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused: is WinRM listening on that port?"
        if isinstance(e, socket.gaierror):
            return "the name does not resolve"
        if isinstance(e, ConnectionResetError):
            return "connection reset by the machine"
        if isinstance(e, OSError) and e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "host unreachable"
    for e in chain:
        name = type(e).__name__
        if name in ("NameResolutionError",):
            return "the name does not resolve"
        if name in ("RemoteDisconnected", "ProtocolError"):
            return "the connection was closed without an answer"
    return "connection failed"


def _tls_reason(exc: BaseException) -> str:
    for e in _chain(exc):
        verify = getattr(e, "verify_message", None)
        if verify:
            return f"certificate verify failed: {verify}"
    return "handshake failed"


def _is_network(exc: BaseException) -> bool:
    """A broken or hung connection: do not wait on it again to clean up."""
    import requests

    return isinstance(exc, requests.exceptions.RequestException)


__all__ = ["WinRMTransport"]
