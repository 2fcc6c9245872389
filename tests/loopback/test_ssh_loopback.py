"""paramiko end to end: SSHTransport + AgentBackend against a real loopback OpenSSH server.

Everything on the wire is real (TCP, key exchange, host key checking, public key and
password authentication, exec channels, stdin/stdout/stderr, exit statuses); only the
Windows machine is a twin behind sshd's forced command (tests/loopback/ssh_forced_command.py).
Commands are counted twice on the server: the forced command's log and sshd's own
"Starting session" lines. One apply or one gather is exactly one exec.
"""

from __future__ import annotations

import base64
import logging
import math
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rdplab.agent import AGENT_PATH, agent_source, commands
from rdplab.backends.agent import AgentBackend
from rdplab.backends.base import CallLog
from rdplab.catalog.base import ROLES, Role
from rdplab.errors import BackendError, ProviderError
from rdplab.lab import load_lab
from rdplab.ops import Op
from rdplab.scenario import run_scenario
from rdplab.transports.ssh import SSHTransport
from rdplab.twin import Twin

from .loopback_lab import LoopbackLabProvider
from .ssh_server import (
    SSHServer,
    find_keygen,
    free_port,
    make_key,
    ssh_agent_backend,
    ssh_server,
)

pytestmark = pytest.mark.ssh_loopback

LAB_FILE = Path(__file__).resolve().parents[2] / "labs" / "rdp-0x904.yaml"
CMD_LIMIT = 8191  # cmd.exe, which Windows' OpenSSH runs every command line through
RDP_TCP = r"HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SSHServer]:
    with ssh_server(tmp_path / "sshd") as s:
        yield s


@pytest.fixture
def backend(server: SSHServer) -> Iterator[AgentBackend]:
    with server.backend() as b:
        yield b


@pytest.fixture
def installed(server: SSHServer, backend: AgentBackend) -> AgentBackend:
    """The backend with the current agent already on the machine (counters reset)."""
    server.install_agent()
    server.reset_counters()
    return backend


def sessions(server: SSHServer) -> int:
    """exec requests sshd itself served (its VERBOSE log)."""
    return server.log().count("Starting session: forced-command")


def logins(server: SSHServer) -> int:
    return server.log().count("Accepted publickey for ")


def fingerprint(server: SSHServer) -> str:
    out = subprocess.run(
        [find_keygen(), "-l", "-f", f"{server.host_key}.pub"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]  # "256 SHA256:... comment (ED25519)"


def chunk_count() -> int:
    return math.ceil(len(base64.b64encode(agent_source())) / commands.CHUNK)


# -- install ----------------------------------------------------------------------------------
def test_missing_agent_is_uploaded_in_chunks_and_verified(
    server: SSHServer, backend: AgentBackend
) -> None:
    assert server.agent_file() is None
    done = backend.ensure_agent()
    chunks = chunk_count()
    assert done == f"agent missing: installed in {chunks} chunk(s)"
    assert server.agent_file() == agent_source()
    assert server.kinds == {"hash": 1, "chunk": chunks, "finish": 1}
    longest = max(e["length"] for e in server.command_log())
    assert longest < CMD_LIMIT, f"a command line has {longest} characters (cmd.exe: 8191)"
    assert backend.transport.commands == chunks + 2 == sessions(server)
    assert logins(server) == 1  # every command ran over the one connection

    server.reset_counters()
    assert backend.ensure_agent() == "agent current"
    assert server.kinds == {"hash": 1}


def test_stale_agent_is_detected_and_replaced(server: SSHServer, backend: AgentBackend) -> None:
    server.install_agent(b"# agent.ps1 from an older rdplab\r\n")
    assert backend.agent_state() == "stale"
    assert backend.ensure_agent().startswith("agent stale: installed in ")
    assert server.agent_file() == agent_source()
    assert backend.agent_state() == "current"
    assert (server.state_dir / "agent.ps1.b64").exists() is False  # staging removed


def test_stale_agent_answer_is_refused(server: SSHServer, backend: AgentBackend) -> None:
    """Even without the hash check, every answer carries the agent's version."""
    server.install_agent(b"# agent.ps1 from an older rdplab\r\n")
    with pytest.raises(BackendError, match=r"^127\.0\.0\.1: the agent on the machine is stale"):
        backend.gather()


def test_missing_agent_without_install_names_the_host(
    server: SSHServer, backend: AgentBackend
) -> None:
    with pytest.raises(BackendError) as info:
        backend.ensure_agent(install=False)
    assert info.value.host == "127.0.0.1"
    assert str(info.value) == (
        f"127.0.0.1: the rdplab agent at {AGENT_PATH} is missing; run with agent install enabled"
    )
    assert server.kinds == {"hash": 1}  # looked, uploaded nothing


def test_calling_a_missing_agent_is_a_clear_error(backend: AgentBackend) -> None:
    with pytest.raises(BackendError, match=r"-File parameter does not exist") as info:
        backend.gather()
    assert "127.0.0.1: the agent answered something that is not JSON (exit 64)" in str(info.value)


def test_upload_failure_names_the_chunk(server: SSHServer, backend: AgentBackend) -> None:
    server.set_knob("fail_next", "chunk")
    with pytest.raises(BackendError) as info:
        backend.ensure_agent()
    assert str(info.value) == (
        "127.0.0.1: uploading the agent failed at chunk 0: Exception calling method:"
        " Access to the path is denied."
    )
    assert server.agent_file() is None


# -- calls ------------------------------------------------------------------------------------
def test_gather_is_one_exec_and_returns_facts(server: SSHServer, installed: AgentBackend) -> None:
    facts = installed.gather({"ports": [3389]})
    assert facts.machine == "127.0.0.1"
    assert facts.raw["computer"]["name"] == "HOST"
    assert facts.raw == server.twin().gather({"ports": [3389]})
    assert server.kinds == {"call": 1}
    assert sessions(server) == installed.transport.commands == 1
    assert installed.calls.total == 1


def test_apply_batch_is_one_exec(server: SSHServer, installed: AgentBackend) -> None:
    ops = [
        Op("reg.set", {"key": RDP_TCP, "name": "PortNumber", "type": "REG_DWORD", "data": 3390}),
        Op("svc.stop", {"name": "TermService"}),
        Op("reg.set", {"key": RDP_TCP, "name": "PortNumber", "type": "REG_DWORD", "data": 3390}),
    ]
    result = installed.apply(ops)
    assert [(r.op, r.changed, r.error) for r in result.results] == [
        ("reg.set", True, None),
        ("svc.stop", True, None),
        ("reg.set", False, None),
    ]
    assert result.results[0].backup  # every registry change is backed up first
    twin = server.twin()
    assert twin.lookup(RDP_TCP, "PortNumber") == 3390
    assert not twin.services.running("TermService")
    assert server.kinds == {"call": 1}
    assert sessions(server) == 1
    assert [r.op for r in installed.journal] == ["reg.set", "svc.stop"]


def test_gather_and_apply_end_to_end(server: SSHServer, installed: AgentBackend) -> None:
    """The machine keeps its state between execs: apply, then gather sees the change."""
    calls = installed.calls
    calls.phase = "break"
    installed.apply(
        [Op("reg.set", {"key": RDP_TCP, "name": "PortNumber", "type": "REG_DWORD", "data": 3391})]
    )
    calls.phase = "detect"
    facts = installed.gather()
    values = facts.raw["registry"][RDP_TCP]["values"]
    assert values["PortNumber"]["data"] == 3391
    assert calls.max_per_machine_phase == 1
    assert calls.to_json() == {"host/break": 1, "host/detect": 1}
    assert server.kinds == {"call": 2} and sessions(server) == 2
    assert logins(server) == 1


def test_failed_op_rolls_back_the_batch(server: SSHServer, installed: AgentBackend) -> None:
    result = installed.apply(
        [
            Op("reg.set", {"key": RDP_TCP, "name": "PortNumber", "type": "REG_DWORD", "data": 1}),
            Op("svc.start", {"name": "NoSuchService"}),
        ]
    )
    assert [(r.changed, r.error) for r in result.results] == [
        (False, None),
        (False, "no service named 'NoSuchService'"),
    ]
    assert server.twin().lookup(RDP_TCP, "PortNumber") == 3389
    assert installed.journal == []


def test_ssh_agent_backend_is_ready(tmp_path: Path) -> None:
    with ssh_agent_backend(tmp_path, "windows-11", "CLIENT", role="client") as b:
        assert b.role == "client"
        assert b.ensure_agent() == "agent current"
        assert b.gather().raw["computer"]["name"] == "CLIENT"
        assert isinstance(b.transport, SSHTransport) and b.transport.commands == 2


def test_one_connection_for_every_command(server: SSHServer) -> None:
    server.install_agent()
    with server.transport() as t:
        b = AgentBackend("host", t, CallLog())
        b.ensure_agent()
        b.gather()
        b.apply([Op("dns.flush", {"name": "x", "expect": "1.2.3.4"})])
        assert t.commands == server.command_count == sessions(server) == 3
    assert logins(server) == 1


def test_large_stdin_and_stdout(server: SSHServer, installed: AgentBackend) -> None:
    """More than one SSH window each way: stdin and output are streamed, not deadlocked."""
    ops = [
        Op("hosts.set", {"name": f"h{i}.{'x' * 40}.rdplab.test", "address": "10.0.0.1"})
        for i in range(2500)
    ]
    body_size = len(str([o.to_json() for o in ops]))
    assert body_size > 200_000
    assert isinstance(installed.transport, SSHTransport)
    installed.transport.STDIN_CHUNK = 4096
    result = installed.apply(ops)
    assert result.changes == 2500
    assert server.kinds == {"call": 1}
    assert server.command_log()[0]["stdin"] > 200_000


# -- failures ---------------------------------------------------------------------------------
def test_nonzero_exit_and_stderr(server: SSHServer, backend: AgentBackend) -> None:
    server.set_knob("fail_next", "hash")
    res = backend.transport.run(commands.hash_command())
    assert (res.rc, res.stdout) == (1, b"")
    assert res.stderr == b"Exception calling method: Access to the path is denied.\r\n"

    res = backend.transport.run("whoami /all")
    assert res.rc == 1
    assert b"'whoami' is not recognized" in res.stderr

    server.set_knob("fail_next", "hash")
    with pytest.raises(BackendError) as info:
        backend.ensure_agent()
    assert str(info.value) == (
        "127.0.0.1: checking the agent failed (exit 1): Exception calling method: Access to the"
        " path is denied."
    )


def test_agent_error_exit_code(installed: AgentBackend) -> None:
    """A request the agent cannot read: exit 2, stderr, nothing on stdout."""
    res = installed.transport.run(commands.call_command(), stdin=b"{not json")
    assert res.rc == 2 and res.stdout == b""
    assert res.stderr.startswith(b"rdplab agent: request is not JSON")


def test_garbage_from_the_agent_names_the_host(server: SSHServer, installed: AgentBackend) -> None:
    server.set_knob("garbage", b"")
    with pytest.raises(BackendError) as info:
        installed.gather()
    msg = str(info.value)
    assert info.value.host == "127.0.0.1"
    assert msg.startswith("127.0.0.1: the agent answered something that is not JSON (exit 0):")
    assert "WARNING: something odd" in msg

    server.set_knob("garbage", b'{"rdplab_agent": 1, "id": "someone else"}')
    with pytest.raises(BackendError, match=r"^127\.0\.0\.1: the agent answered another request"):
        installed.gather()
    server.set_knob("garbage", None)
    assert installed.gather().raw["computer"]["name"] == "HOST"


def test_unknown_host_key_is_refused_by_default(
    server: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default known_hosts (~/.ssh/known_hosts) without the machine: refused, with the
    fingerprint and how to add it; nothing is run."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    t = SSHTransport("127.0.0.1", server.port, server.user, key_filename=server.client_key)
    assert t.known_hosts == tmp_path / "home" / ".ssh" / "known_hosts"
    with pytest.raises(BackendError) as info:
        t.open()
    msg = str(info.value)
    assert info.value.host == "127.0.0.1"
    name = f"[127.0.0.1]:{server.port}"
    assert msg.startswith(f"127.0.0.1: host key for {name} is not in {t.known_hosts}")
    assert f"ssh-ed25519 {fingerprint(server)}" in msg
    assert f"ssh-keyscan -p {server.port} -t ssh-ed25519 127.0.0.1 >> {t.known_hosts}" in msg
    assert logins(server) == 0 and sessions(server) == 0

    # a known_hosts file that knows other machines only: refused as well
    other = tmp_path / "known_hosts"
    other.write_text(f"[127.0.0.1]:{free_port()} {' '.join(server.host_key_line.split()[:2])}\n")
    with pytest.raises(BackendError, match=r"is not in .*known_hosts \(the machine offered"):
        server.transport(known_hosts=other).open()


def test_changed_host_key_is_refused(server: SSHServer, tmp_path: Path) -> None:
    impostor = make_key(tmp_path / "impostor", "impostor").split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {impostor[0]} {impostor[1]}\n")
    with pytest.raises(BackendError) as info:
        server.transport(known_hosts=known).open()
    msg = str(info.value)
    assert msg.startswith(f"127.0.0.1: host key for [127.0.0.1]:{server.port} CHANGED:")
    assert fingerprint(server) in msg
    assert f"ssh-keygen -R '[127.0.0.1]:{server.port}' -f {known}" in msg
    assert logins(server) == 0


def test_wrong_key_names_host_and_user_only(server: SSHServer, tmp_path: Path) -> None:
    make_key(tmp_path / "stranger", "stranger")
    t = server.transport(key_filename=tmp_path / "stranger")
    with pytest.raises(BackendError) as info:
        t.open()
    assert info.value.host == "127.0.0.1"
    assert str(info.value) == (
        f"127.0.0.1: authentication failed for user {server.user} at 127.0.0.1:{server.port}"
        " (publickey rejected: is the key in the user's authorized_keys?)"
    )
    assert logins(server) == 0 and sessions(server) == 0


def test_encrypted_key_needs_its_passphrase(server: SSHServer, tmp_path: Path) -> None:
    secret = "K3y-Pa55phrase-Secret"
    make_key(tmp_path / "locked", "locked", passphrase=secret)
    with pytest.raises(BackendError) as info:
        server.transport(key_filename=tmp_path / "locked").open()
    assert str(info.value) == (
        f"127.0.0.1: the private key {tmp_path / 'locked'} is encrypted: give its passphrase"
        f" (user {server.user} at 127.0.0.1:{server.port})"
    )
    with pytest.raises(BackendError) as info:
        server.transport(key_filename=tmp_path / "locked", passphrase="Wr0ng-Phrase!").open()
    assert str(info.value).startswith(
        f"127.0.0.1: cannot use the private key {tmp_path / 'locked'} ("
    )
    assert "a wrong passphrase" in str(info.value)
    assert "Wr0ng-Phrase!" not in str(info.value)
    with pytest.raises(BackendError, match="file"):
        server.transport(key_filename=tmp_path / "missing-key").open()
    with pytest.raises(BackendError) as info:  # right passphrase, key not authorized
        server.transport(key_filename=tmp_path / "locked", passphrase=secret).open()
    assert "authentication failed for user" in str(info.value)
    assert secret not in str(info.value)


def test_connection_refused() -> None:
    port = free_port()
    t = SSHTransport("127.0.0.1", port, "labadmin", password="pw", timeout=5)
    with pytest.raises(BackendError) as info:
        t.open()
    assert str(info.value) == (
        f"127.0.0.1: cannot reach 127.0.0.1:{port} (connection refused: is sshd listening there?)"
    )


def test_silent_server_times_out() -> None:
    """Something accepts the connection but never says SSH-2.0: a banner timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
        thread.start()
        t = SSHTransport("127.0.0.1", port, "labadmin", password="pw", timeout=1)
        try:
            with pytest.raises(BackendError) as info:
                t.open()
        finally:
            thread.join(5)
            for s in accepted:
                s.close()
    msg = str(info.value)
    assert msg == (
        f"127.0.0.1: timed out after 1s waiting for the SSH handshake with 127.0.0.1:{port}"
        " (is an SSH server answering there?)"
    ) or msg.startswith(
        f"127.0.0.1: 127.0.0.1:{port} did not answer as an SSH server (Error reading SSH"
    ), msg


def test_command_timeout(server: SSHServer, backend: AgentBackend) -> None:
    assert isinstance(backend.transport, SSHTransport)
    backend.transport.command_timeout = 1.0
    server.set_knob("delay", "4")
    with pytest.raises(BackendError) as info:
        backend.transport.run(commands.hash_command())
    assert str(info.value) == "127.0.0.1: timed out after 1s waiting for a command to finish"
    server.set_knob("delay", None)
    backend.transport.command_timeout = 30.0
    assert backend.agent_state() == "missing"  # the connection is still usable


def test_run_before_open_and_reopen(server: SSHServer) -> None:
    t = server.transport()
    with pytest.raises(BackendError, match=r"^127\.0\.0\.1: the SSH transport is not open$"):
        t.run(commands.hash_command())
    with t:
        assert t.run(commands.hash_command()).stdout == b"MISSING\r\n"
    with pytest.raises(BackendError, match="not open"):
        t.run(commands.hash_command())
    with t:  # a closed transport opens again
        assert t.run(commands.hash_command()).rc == 0
    assert t.commands == 2


def test_missing_paramiko_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "paramiko", None)
    with pytest.raises(ProviderError) as info:
        SSHTransport("10.0.0.5", username="labadmin", password="pw").open()
    assert "pip install 'rdplab[real]'" in str(info.value)


def test_arguments_are_checked() -> None:
    with pytest.raises(ProviderError, match="needs a username"):
        SSHTransport("10.0.0.5")
    with pytest.raises(ProviderError, match="port"):
        SSHTransport("10.0.0.5", 0, "u")
    t = SSHTransport("win.lab", username="labadmin", password="pw")
    assert (t.port, t.where, t.known_hosts_name) == (22, "win.lab:22", "win.lab")
    assert t.known_hosts == Path("~/.ssh/known_hosts").expanduser()


# -- secrets ----------------------------------------------------------------------------------
def test_the_password_never_shows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A password-auth failure (the server offers password auth and rejects it): the
    password is not in messages, reprs, exception args or log lines, even at DEBUG."""
    secret = "S3cret-Pa55word-For-SSH!"
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)

    def record(exc: BaseException) -> None:
        seen.extend([str(exc), repr(exc), repr(exc.args), repr(vars(exc))])

    with ssh_server(tmp_path / "sshd", password_auth=True) as server:
        t = server.transport(password=secret)
        assert t.key_filename is None
        seen.extend([repr(t), repr(vars(t))])
        with pytest.raises(BackendError) as info:
            t.open()
        record(info.value)
        assert str(info.value) == (
            f"127.0.0.1: authentication failed for user {server.user} at"
            f" 127.0.0.1:{server.port} (password rejected)"
        )
        assert "Failed password for" in server.log()  # sshd did check a password
        # a password next to a key, and a password to a closed port
        for other in (
            server.transport(password=secret, key_filename=tmp_path / "sshd" / "client_ed25519"),
            SSHTransport("127.0.0.1", free_port(), "u", password=secret),
        ):
            seen.append(repr(other))
            try:
                other.open()
                other.close()
            except BackendError as exc:
                record(exc)
        with pytest.raises(TypeError):
            pickle.dumps(t)
    seen.extend(r.getMessage() for r in caplog.records)
    seen.append(caplog.text)
    text = "\n".join(seen)
    assert "paramiko" in caplog.text or caplog.records  # paramiko did log
    assert secret not in text


def test_server_without_password_auth(tmp_path: Path) -> None:
    with ssh_server(tmp_path / "sshd", password_auth=False) as server:
        with pytest.raises(BackendError) as info:
            server.transport(password="whatever-Secret-1").open()
        assert str(info.value) == (
            f"127.0.0.1: authentication failed for user {server.user} at"
            f" 127.0.0.1:{server.port}: the machine accepts only publickey"
        )
        assert "whatever-Secret-1" not in str(info.value)


# -- a whole scenario over SSH ----------------------------------------------------------------
class LoopbackSSHProvider(LoopbackLabProvider):
    """Client and host are two loopback sshd machines; each scenario starts from fresh
    twins written into their state directories. One SSH connection per machine."""

    name = "ssh-loopback"
    runs_on = "loopback OpenSSH servers with twins (no Windows ran)"

    def __init__(self, servers: dict[Role, SSHServer]) -> None:
        super().__init__(servers, {role: s.transport() for role, s in servers.items()})
        self.servers = servers

    def put_twin(self, role: Role, twin: Twin) -> None:
        self.servers[role].set_twin(twin)

    def twin_of(self, role: Role) -> Twin:
        return self.servers[role].twin()


@pytest.fixture(scope="module")
def lab_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSSHProvider]:
    root = tmp_path_factory.mktemp("ssh-lab")
    with (
        ssh_server(root / "client", "windows-11", "CLIENT") as client,
        ssh_server(root / "host") as host,
    ):
        provider = LoopbackSSHProvider({"client": client, "host": host})
        try:
            yield provider
        finally:
            provider.close()


@pytest.mark.parametrize("scenario_id", ["healthy", "firewall-blocked"])
def test_scenario_over_ssh(lab_provider: LoopbackSSHProvider, scenario_id: str) -> None:
    scenario = load_lab(LAB_FILE).scenario(scenario_id)
    run = run_scenario(lab_provider, scenario)
    assert run.error is None, f"stopped at {run.failed_step}: {run.error}"
    assert {(f.fault, f.role) for f in run.findings} == scenario.expected()
    assert run.findings_after == []
    assert run.connection_after is not None and run.connection_after.ok
    assert run.unexpected_diff == {}
    # the budget: at most one exec per machine per phase, and nothing else on the wire
    assert run.max_calls_per_machine_phase == 1, run.calls
    for role in ROLES:
        server = lab_provider.servers[role]
        logged = sum(n for key, n in run.calls.items() if key.startswith(f"{role}/"))
        assert server.command_count == logged, (role, server.kinds, run.calls)
        assert set(server.kinds) == {"call"}
        assert logins(server) == 1  # one connection for the whole module


def test_scenario_over_ssh_fix_via_script(lab_provider: LoopbackSSHProvider) -> None:
    """--lab-fix-via=script over paramiko: the exported script goes up on stdin of ONE exec
    per fix phase (the forced command logs its length), -AllowLowerSecurity passed through
    for an opted-in scenario, and every aspect holds."""
    from rdplab import export as ex
    from rdplab.scenario import fix_exports

    for scenario_id in ("rdp-disabled-policy", "credssp-oracle-mismatch-workaround"):
        scenario = load_lab(LAB_FILE).scenario(scenario_id)
        run = run_scenario(lab_provider, scenario, fix_via="script")
        assert run.error is None, f"stopped at {run.failed_step}: {run.error}"
        assert run.findings_after == [] and run.unexpected_diff == {}
        assert all(b.changes == 0 for b in run.fix_again_results.values())
        assert run.max_calls_per_machine_phase == 1, run.calls
        for role, export in fix_exports(run).items():
            scripts = [e for e in lab_provider.servers[role].command_log() if e["kind"] == "script"]
            size = len(ex.script(export).encode("utf-8-sig"))
            assert [e["stdin"] for e in scripts] == [size, size]  # fix and fix-again
