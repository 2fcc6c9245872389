"""SSH transport over paramiko (Windows' own OpenSSH server, sshd on port 22).

One connection per transport: ``open`` connects and authenticates, every ``run`` is one
``exec`` channel on it (stdin written then closed, stdout and stderr read to the end, the
exit status collected), ``close`` disconnects. paramiko is imported in ``open``; rdplab's
core does not need it.

Host keys are checked strictly: the machine's key must already be in ``known_hosts``
(default ``~/.ssh/known_hosts``); an unknown or changed key is refused with its fingerprint
and the way to add it. Authentication uses ``key_filename`` and/or ``password``; with
neither, the SSH agent and the ``~/.ssh/id_*`` keys are tried, as ``ssh`` does.

Errors are ``BackendError(host, ...)``; the password and the key passphrase are never part
of a message, a repr or a log line (every message is scrubbed before it is raised).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rdplab.errors import BackendError, ProviderError
from rdplab.secret import Secret
from rdplab.transports.base import CommandResult, Transport

if TYPE_CHECKING:
    from paramiko import Channel, PKey, SSHClient

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class SSHTransport(Transport):
    """An SSH connection to one Windows machine.

    ``timeout`` bounds connecting, the SSH banner, authentication and opening a channel;
    ``command_timeout`` bounds one whole command.
    """

    #: bytes of stdin per channel send
    STDIN_CHUNK = 32 * 1024
    #: bytes read per channel recv
    READ_CHUNK = 64 * 1024

    def __init__(
        self,
        host: str,
        port: int = 22,
        username: str = "",
        password: str | None = None,
        key_filename: str | os.PathLike[str] | None = None,
        known_hosts: str | os.PathLike[str] | None = None,
        *,
        passphrase: str | None = None,
        timeout: float = 15.0,
        command_timeout: float = 600.0,
    ) -> None:
        super().__init__(host)
        if not username:
            raise ProviderError(f"{host}: SSH needs a username")
        if not 1 <= int(port) <= 65535:
            raise ProviderError(f"{host}: SSH port must be 1-65535, not {port!r}")
        if timeout <= 0 or command_timeout <= 0:
            raise ProviderError(f"{host}: SSH timeouts must be positive")
        self.port = int(port)
        self.username = username
        self._password = Secret(password)
        self._passphrase = Secret(passphrase)
        self.key_filename = os.fspath(key_filename) if key_filename is not None else None
        self.known_hosts = Path(os.fspath(known_hosts or DEFAULT_KNOWN_HOSTS)).expanduser()
        self.timeout = float(timeout)
        self.command_timeout = float(command_timeout)
        self._client: SSHClient | None = None

    # -- identity ----------------------------------------------------------------------------
    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The host's name in known_hosts: ``host`` on port 22, else ``[host]:port``."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __repr__(self) -> str:
        return (
            f"SSHTransport(where={self.where!r}, username={self.username!r},"
            f" known_hosts={str(self.known_hosts)!r}, commands={self.commands})"
        )

    # -- session -----------------------------------------------------------------------------
    def open(self) -> None:
        if self._client is not None:
            session = self._client.get_transport()
            if session is not None and session.is_active():
                return
            self.close()  # the connection dropped: connect again
        try:
            import paramiko
        except ImportError:
            raise ProviderError(
                "the SSH transport needs paramiko: pip install 'rdplab[real]' (paramiko)"
            ) from None

        class _Reject(paramiko.MissingHostKeyPolicy):
            """paramiko's RejectPolicy, keeping the offered key for the message."""

            def missing_host_key(self, client: SSHClient, hostname: str, key: PKey) -> None:
                raise _UnknownHostKeyError(hostname, key)

        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(self.known_hosts))
        except FileNotFoundError:
            pass  # no known hosts: every key is unknown, and refused below
        except (OSError, paramiko.SSHException) as exc:
            raise BackendError(
                self.host,
                f"cannot read known_hosts {self.known_hosts} ({type(exc).__name__})",
            ) from None
        client.set_missing_host_key_policy(_Reject())
        password, passphrase = self._password.reveal(), self._passphrase.reveal()
        explicit = self.key_filename is not None or password is not None
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.username,
                password=password,
                passphrase=passphrase,
                key_filename=self.key_filename,
                allow_agent=not explicit,
                look_for_keys=not explicit,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
            )
        except Exception as exc:
            handshake = client.get_transport()
            client.close()
            if handshake is not None and not handshake.is_authenticated() and _no_session(exc):
                # the handshake did not finish in time: paramiko then fails in auth
                raise self._error(_HandshakeTimeoutError(), "connecting") from None
            raise self._error(exc, "connecting") from None
        self._client = client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- commands ----------------------------------------------------------------------------
    def run(self, command: str, stdin: bytes | None = None) -> CommandResult:
        client = self._client
        transport = client.get_transport() if client is not None else None
        if transport is None:
            raise BackendError(self.host, "the SSH transport is not open")
        self.commands += 1
        deadline = time.monotonic() + self.command_timeout
        try:
            chan = transport.open_session(timeout=self.timeout)
        except Exception as exc:
            raise self._error(exc, "opening a channel") from None
        try:
            chan.exec_command(command)
            stdout, stderr = self._exchange(chan, stdin or b"", deadline)
            if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise _CommandTimeoutError(self.command_timeout)
            rc = chan.recv_exit_status()
        except Exception as exc:
            raise self._error(exc, "running a command") from None
        finally:
            chan.close()
        if rc == -1:
            raise BackendError(
                self.host, "the command ended without an exit status (killed on the machine?)"
            )
        return CommandResult(rc, stdout, stderr)

    def _exchange(self, chan: Channel, data: bytes, deadline: float) -> tuple[bytes, bytes]:
        """Write stdin and read both streams together, until the machine closes them."""
        chan.settimeout(0.0)
        pending = memoryview(data)
        if not pending:
            chan.shutdown_write()
        out: list[bytes] = []
        err: list[bytes] = []
        while True:
            if pending and chan.closed:
                pending = memoryview(b"")  # the command is gone: the rest has no reader
            if pending and chan.send_ready():
                sent = chan.send(bytes(pending[: self.STDIN_CHUNK]))
                pending = pending[sent:]
                if not pending:
                    chan.shutdown_write()
            got = False
            while chan.recv_ready():
                out.append(chan.recv(self.READ_CHUNK))
                got = True
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(self.READ_CHUNK))
                got = True
            if (
                chan.eof_received
                and not pending
                and not chan.recv_ready()
                and not chan.recv_stderr_ready()
            ):
                return b"".join(out), b"".join(err)
            if got:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise _CommandTimeoutError(self.command_timeout)
            # the channel's fileno is readable when stdout or stderr has data (or at EOF);
            # while stdin is still going out, wake up soon to send more
            select.select([chan], [], [], min(left, 0.01 if pending else 1.0))

    # -- errors ------------------------------------------------------------------------------
    def _error(self, exc: BaseException, doing: str) -> BackendError:
        return BackendError(self.host, self._scrub(self._describe(exc, doing)))

    def _describe(self, exc: BaseException, doing: str) -> str:
        import paramiko

        if isinstance(exc, _UnknownHostKeyError):
            return self._unknown_key(exc.key)
        if isinstance(exc, paramiko.BadHostKeyException):
            return self._changed_key(exc.key, exc.expected_key)
        if isinstance(exc, _HandshakeTimeoutError):
            return (
                f"timed out after {self.timeout:g}s waiting for the SSH handshake with"
                f" {self.where} (is an SSH server answering there?)"
            )
        if isinstance(exc, _CommandTimeoutError):
            return f"timed out after {exc.seconds:g}s waiting for a command to finish"
        if isinstance(exc, paramiko.PasswordRequiredException):
            return (
                f"the private key {self.key_filename} is encrypted: give its passphrase"
                f" (user {self.username} at {self.where})"
            )
        if isinstance(exc, paramiko.BadAuthenticationType):
            allowed = ", ".join(exc.allowed_types) or "none"
            return (
                f"authentication failed for user {self.username} at {self.where}: the machine"
                f" accepts only {allowed}"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return (
                f"authentication failed for user {self.username} at {self.where} ({self._tried()})"
            )
        if isinstance(exc, FileNotFoundError | PermissionError) and doing == "connecting":
            return f"cannot read the private key file {self.key_filename} ({type(exc).__name__})"
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            if all(isinstance(e, ConnectionRefusedError) for e in exc.errors.values()) or all(
                getattr(e, "errno", None) == errno.ECONNREFUSED for e in exc.errors.values()
            ):
                return f"cannot reach {self.where} (connection refused: is sshd listening there?)"
            return f"cannot reach {self.where} (connection failed)"
        if isinstance(exc, TimeoutError):
            what = f"connecting to {self.where}" if doing == "connecting" else "an answer"
            return f"timed out after {self.timeout:g}s {what} ({doing})"
        if isinstance(exc, socket.gaierror):
            return f"cannot reach {self.where} (the name does not resolve)"
        if isinstance(exc, ConnectionRefusedError):
            return f"cannot reach {self.where} (connection refused: is sshd listening there?)"
        if isinstance(exc, ConnectionResetError | EOFError):
            return f"the connection to {self.where} was closed while {doing}"
        if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"cannot reach {self.where} (host unreachable)"
        if isinstance(exc, paramiko.ChannelException):
            return f"the machine refused a session channel while {doing} ({exc.text})"
        if isinstance(exc, paramiko.SSHException):
            text = str(exc)
            if doing == "connecting" and self.key_filename and _key_trouble(text):
                return (
                    f"cannot use the private key {self.key_filename} ({text}): a wrong"
                    " passphrase, or not a private key file"
                )
            if "banner" in text.lower():
                return f"{self.where} did not answer as an SSH server ({text})"
            return f"SSH error while {doing} with {self.where}: {text}"
        return f"unexpected error while {doing} with {self.where} ({type(exc).__name__})"

    def _unknown_key(self, key: PKey) -> str:
        name, kind = self.known_hosts_name, key.get_name()
        port = f"-p {self.port} " if self.port != 22 else ""
        return (
            f"host key for {name} is not in {self.known_hosts} (the machine offered {kind}"
            f" {key.fingerprint}); check that fingerprint on the machine (ssh-keygen -lf"
            r" C:\ProgramData\ssh\ssh_host_*_key.pub), then add it:"
            f" ssh-keyscan {port}-t {kind} {self.host} >> {self.known_hosts}"
        )

    def _changed_key(self, got: PKey, expected: PKey) -> str:
        name = self.known_hosts_name
        return (
            f"host key for {name} CHANGED: {self.known_hosts} has {expected.get_name()}"
            f" {expected.fingerprint}, the machine offered {got.get_name()} {got.fingerprint};"
            " this is a rebuilt machine or someone in the middle. If the machine was rebuilt,"
            f" check the new fingerprint on it, then: ssh-keygen -R '{name}' -f"
            f" {self.known_hosts}, and add the new key"
        )

    def _tried(self) -> str:
        if self.key_filename is not None and self._password:
            return "publickey and password rejected"
        if self.key_filename is not None:
            return "publickey rejected: is the key in the user's authorized_keys?"
        if self._password:
            return "password rejected"
        return "no key from the SSH agent or ~/.ssh was accepted"

    def _scrub(self, text: str) -> str:
        for secret in (self._password.reveal(), self._passphrase.reveal()):
            if secret:
                text = text.replace(secret, "***")
        return text


class _UnknownHostKeyError(Exception):
    def __init__(self, hostname: str, key: PKey) -> None:
        super().__init__(f"host key for {hostname} is unknown")
        self.key = key


def _key_trouble(text: str) -> bool:
    text = text.lower()
    return any(w in text for w in ("invalid key", "passphrase", "checkints", "not a valid"))


class _HandshakeTimeoutError(Exception):
    pass


def _no_session(exc: BaseException) -> bool:
    return type(exc).__name__ == "SSHException" and str(exc) == "No existing session"


class _CommandTimeoutError(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"command timed out after {seconds:g}s")
        self.seconds = seconds


__all__ = ["SSHTransport"]
