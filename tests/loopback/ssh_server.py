"""A real OpenSSH server on 127.0.0.1 for the loopback SSH suite.

``ssh_server(tmp_path)`` starts Debian's ``/usr/sbin/sshd -D -e -f <config>`` as the
current user on a free port, with everything in a temporary directory: an ed25519 host
key (also written to a client ``known_hosts``), a client key, and an ``authorized_keys``
whose only entry forces ``<python> ssh_forced_command.py <state dir>``. Whatever the
client asks to run, sshd runs the forced command with the request in
``SSH_ORIGINAL_COMMAND``; that script plays the Windows machine (see its docstring) and
keeps its state (agent file, twin, command log, knobs) in the state directory, which
``SSHServer`` reads and writes for the tests.

So the SSH side is entirely real: TCP, key exchange, host key checking, public key and
password authentication, exec channels, stdin/stdout/stderr and exit statuses. Only the
answers come from a twin (``rdplab.agent.emulator``).

Runs as root (the usual container case: sshd then needs its privilege separation
directory /run/sshd, created here when missing) or as an ordinary user (sshd can then
only log that same user in, which is all the suite needs). ``StrictModes no`` because
pytest's temporary directories are not owned the way sshd insists on; ``UsePAM no``.

``ssh_agent_backend(tmp_path)`` is the short way to an ``AgentBackend`` over
``SSHTransport`` to such a server.
"""

from __future__ import annotations

import json
import os
import pickle
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import rdplab.agent
from rdplab.backends.agent import AgentBackend
from rdplab.backends.base import CallLog
from rdplab.transports.ssh import SSHTransport
from rdplab.twin import Twin

FORCED_COMMAND = Path(__file__).resolve().with_name("ssh_forced_command.py")
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # Debian's compiled-in privilege separation directory
START_TIMEOUT = 15.0
HOST = "127.0.0.1"


def find_sshd() -> str:
    """The sshd binary, or skip: the only reason this suite may skip."""
    for path in (*SSHD_CANDIDATES, shutil.which("sshd")):
        if path and os.access(path, os.X_OK):
            return str(Path(path).resolve())  # sshd re-execs itself: needs an absolute path
    pytest.skip("openssh-server not installed: apt-get install -y openssh-server (needs sshd)")


def find_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        pytest.skip(
            "openssh-server not installed: ssh-keygen missing (apt-get install -y"
            " openssh-server openssh-client)"
        )
    return path


def make_key(path: Path, comment: str = "rdplab-loopback", passphrase: str = "") -> str:
    """Generate an ed25519 key pair at ``path``; return the public key line."""
    subprocess.run(
        [find_keygen(), "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class SSHServer:
    root: Path
    port: int
    user: str
    host_key: Path
    host_key_line: str  # "ssh-ed25519 AAAA... comment"
    known_hosts: Path
    client_key: Path
    state_dir: Path
    log_file: Path
    password_auth: bool
    process: subprocess.Popen[bytes] | None = None
    host: str = HOST

    # -- the client side ---------------------------------------------------------------------
    def transport(self, **kw: Any) -> SSHTransport:
        """A transport with the server's key in known_hosts and the authorized client key."""
        kw.setdefault("username", self.user)
        if "password" not in kw:
            kw.setdefault("key_filename", self.client_key)
        kw.setdefault("known_hosts", self.known_hosts)
        kw.setdefault("timeout", 10.0)
        kw.setdefault("command_timeout", 60.0)
        return SSHTransport(self.host, self.port, **kw)

    @contextmanager
    def backend(self, role: str = "host", calls: CallLog | None = None) -> Iterator[AgentBackend]:
        t = self.transport()
        t.open()
        try:
            yield AgentBackend(role, t, calls or CallLog())
        finally:
            t.close()

    # -- the machine's state (what the forced command keeps) -------------------------------
    @property
    def commands_log(self) -> Path:
        return self.state_dir / "commands.log"

    def command_log(self) -> list[dict[str, Any]]:
        if not self.commands_log.exists():
            return []
        return [json.loads(line) for line in self.commands_log.read_text().splitlines()]

    @property
    def kinds(self) -> Counter[str]:
        """Commands run on the server since the last reset, by kind."""
        return Counter(e["kind"] for e in self.command_log())

    @property
    def command_count(self) -> int:
        return len(self.command_log())

    def reset_counters(self) -> None:
        self.commands_log.unlink(missing_ok=True)

    def agent_file(self) -> bytes | None:
        path = self.state_dir / "agent.ps1"
        return path.read_bytes() if path.exists() else None

    def install_agent(self, content: bytes | None = None) -> None:
        """Put an agent on the machine directly (no command): rdplab's, or ``content``."""
        (self.state_dir / "agent.ps1").write_bytes(
            rdplab.agent.agent_source() if content is None else content
        )

    def remove_agent(self) -> None:
        (self.state_dir / "agent.ps1").unlink(missing_ok=True)

    def twin(self) -> Twin:
        """The machine's twin as the forced command left it (after the first call)."""
        twin: Twin = pickle.loads((self.state_dir / "twin.pickle").read_bytes())
        return twin

    def set_twin(self, twin: Twin) -> None:
        """Replace the machine's twin. Its ``http_reach`` must pickle (``str.__eq__`` of an
        address, ``frozenset().__contains__``...): the default lambda is replaced."""
        try:
            data = pickle.dumps(twin)
        except (pickle.PicklingError, AttributeError, TypeError):
            twin.http_reach = frozenset().__contains__
            data = pickle.dumps(twin)
        (self.state_dir / "twin.pickle").write_bytes(data)

    def set_knob(self, name: str, value: bytes | str | None) -> None:
        """``garbage`` (bytes the agent prints), ``fail_next`` (a kind, or "" for any),
        ``delay`` (seconds); ``None`` turns the knob off."""
        path = self.state_dir / name
        if value is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(value.encode() if isinstance(value, str) else value)

    # -- the server --------------------------------------------------------------------------
    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _sshd_config(server: SSHServer, authorized_keys: Path) -> str:
    lines = [
        f"ListenAddress {HOST}",
        f"Port {server.port}",
        f"HostKey {server.host_key}",
        f"PidFile {server.root / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys}",
        f"AllowUsers {server.user}",
        "StrictModes no",
        "UsePAM no",
        "PubkeyAuthentication yes",
        f"PasswordAuthentication {'yes' if server.password_auth else 'no'}",
        "PermitEmptyPasswords no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "AuthenticationMethods any",
        "MaxAuthTries 6",
        "MaxStartups 50",
        "MaxSessions 50",
        "LoginGraceTime 30",
        "UseDNS no",
        "PermitTTY no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "AllowAgentForwarding no",
        "PermitTunnel no",
        "PermitUserEnvironment no",
        "PrintMotd no",
        "PrintLastLog no",
        "LogLevel VERBOSE",
        # the forced command's shell must not source the account's ~/.bashrc: on a
        # machine whose .bashrc runs `pyenv init`, concurrent sessions race on pyenv's
        # rehash lock and print "rm: cannot remove ..." into the command's stderr (seen
        # in CI); an empty HOME is also a quarter second faster per command
        f"SetEnv HOME={server.root / 'home'}",
    ]
    (server.root / "home").mkdir(exist_ok=True)
    return "\n".join(lines) + "\n"


def _start(server: SSHServer, sshd: str, config: Path) -> subprocess.Popen[bytes]:
    log = server.log_file.open("ab")
    try:
        return subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=server.root,
        )
    finally:
        log.close()


def _wait_ready(server: SSHServer, proc: subprocess.Popen[bytes]) -> bool:
    """True when sshd answers with an SSH banner; False when it exited (port taken...)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with suppress(OSError), socket.create_connection((HOST, server.port), timeout=2) as s:
            s.settimeout(2)
            if s.recv(64).startswith(b"SSH-2.0-"):
                return True
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"sshd did not start within {START_TIMEOUT:g}s:\n{server.log()}")


def start_server(
    root: Path,
    baseline: str = "windows-server-2022",
    computer_name: str = "HOST",
    *,
    password_auth: bool = True,
) -> SSHServer:
    """Start sshd under ``root`` (created). Call ``stop()`` (or use ``ssh_server``)."""
    sshd = find_sshd()
    root.mkdir(parents=True, exist_ok=True)
    state = root / "state"
    state.mkdir(exist_ok=True)
    user = pwd.getpwuid(os.geteuid()).pw_name  # sshd logs in only the user it runs as
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)  # what the service unit does

    host_key = root / "ssh_host_ed25519_key"
    host_line = make_key(host_key, "rdplab-loopback-host")
    client_key = root / "client_ed25519"
    client_line = make_key(client_key, "rdplab-loopback-client")

    (state / "config.json").write_text(
        json.dumps(
            {
                "sys_path": [str(Path(rdplab.__file__).resolve().parents[1])],
                "baseline": baseline,
                "computer_name": computer_name,
            }
        )
    )
    forced = " ".join(shlex.quote(str(p)) for p in (sys.executable, FORCED_COMMAND, state))
    authorized_keys = root / "authorized_keys"
    authorized_keys.write_text(
        f'restrict,command="{forced.replace(chr(34), chr(92) + chr(34))}" {client_line}\n'
    )
    authorized_keys.chmod(0o600)

    return launch(
        root, sshd, user, (host_key, host_line), client_key, state, authorized_keys,
        password_auth=password_auth,
    )  # fmt: skip


def launch(
    root: Path,
    sshd: str,
    user: str,
    host: tuple[Path, str],
    client_key: Path,
    state: Path,
    authorized_keys: Path,
    *,
    password_auth: bool,
) -> SSHServer:
    """sshd on a free port of 127.0.0.1 with ``root/sshd_config``, retried when the port
    was taken between choosing and binding it; ``known_hosts`` names its host key."""
    host_key, host_line = host
    config = root / "sshd_config"
    for _ in range(5):
        server = SSHServer(
            root=root,
            port=free_port(),
            user=user,
            host_key=host_key,
            host_key_line=host_line,
            known_hosts=root / "known_hosts",
            client_key=client_key,
            state_dir=state,
            log_file=root / "sshd.log",
            password_auth=password_auth,
        )
        key_type, key_b64 = host_line.split()[:2]
        server.known_hosts.write_text(f"[{HOST}]:{server.port} {key_type} {key_b64}\n")
        config.write_text(_sshd_config(server, authorized_keys))
        proc = _start(server, sshd, config)
        if _wait_ready(server, proc):
            server.process = proc
            return server
        if "Address already in use" not in server.log():
            break
    raise RuntimeError(f"sshd did not start (exit {proc.returncode}):\n{server.log()}")


@contextmanager
def ssh_server(
    root: Path,
    baseline: str = "windows-server-2022",
    computer_name: str = "HOST",
    *,
    password_auth: bool = True,
) -> Iterator[SSHServer]:
    server = start_server(root, baseline, computer_name, password_auth=password_auth)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def ssh_agent_backend(
    tmp_path: Path,
    baseline: str = "windows-server-2022",
    computer_name: str = "HOST",
    *,
    role: str = "host",
    calls: CallLog | None = None,
    agent_installed: bool = True,
) -> Iterator[AgentBackend]:
    """An AgentBackend over SSHTransport to a fresh loopback sshd whose machine is a twin of
    ``baseline``. The current agent is already on the machine (``ensure_agent()`` answers
    "agent current" with one command) unless ``agent_installed=False``."""
    with ssh_server(tmp_path / "sshd", baseline, computer_name) as server:
        if agent_installed:
            server.install_agent()
        with server.backend(role, calls) as backend:
            yield backend
