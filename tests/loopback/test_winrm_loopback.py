"""pywinrm end to end: WinRMTransport + AgentBackend against the loopback responder.

Everything on the wire is real (HTTP, WS-Management SOAP, Basic auth, TLS, pywinrm's
Receive loop); only the Windows machine is a twin behind ``rdplab.agent.emulator``.
Round trips are counted on the responder: one apply or one gather is exactly one Command.
"""

from __future__ import annotations

import base64
import logging
import math
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rdplab.agent import AGENT_PATH, agent_source, commands
from rdplab.backends.agent import AgentBackend
from rdplab.backends.base import CallLog
from rdplab.catalog.base import ROLES
from rdplab.errors import BackendError, ProviderError
from rdplab.lab import load_lab
from rdplab.ops import Op
from rdplab.scenario import run_scenario
from rdplab.transports.winrm import WinRMTransport

from .winrm_lab import LoopbackWinRMProvider, winrm_lab, winrm_to
from .wsman_responder import CMD_LIMIT, Responder, responder

pytestmark = pytest.mark.winrm_loopback

LAB_FILE = Path(__file__).resolve().parents[2] / "labs" / "rdp-0x904.yaml"
RDP_TCP = r"HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server\WinStations\RDP-Tcp"


@pytest.fixture
def machine() -> Iterator[Responder]:
    with responder() as r:
        yield r


@pytest.fixture
def backend(machine: Responder) -> Iterator[AgentBackend]:
    t = winrm_to(machine)
    t.open()
    try:
        yield AgentBackend("host", t, CallLog())
    finally:
        t.close()


@pytest.fixture
def installed(machine: Responder, backend: AgentBackend) -> AgentBackend:
    """The backend with the current agent already on the machine (counters reset)."""
    machine.install_agent()
    machine.reset_counters()
    return backend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- install ----------------------------------------------------------------------------------
def test_missing_agent_is_uploaded_in_chunks_and_verified(
    machine: Responder, backend: AgentBackend
) -> None:
    assert machine.agent_file() is None
    done = backend.ensure_agent()
    chunks = math.ceil(len(base64.b64encode(agent_source())) / commands.CHUNK)
    assert done == f"agent missing: installed in {chunks} chunk(s)"
    assert machine.agent_file() == agent_source()
    assert machine.kinds == {"hash": 1, "chunk": chunks, "finish": 1}
    longest = max(len(line) for line in machine.command_lines)
    assert longest < CMD_LIMIT, f"a command line has {longest} characters (cmd.exe: 8191)"
    assert machine.shells_opened == 1  # every command ran in the one shell

    machine.reset_counters()
    assert backend.ensure_agent() == "agent current"
    assert machine.kinds == {"hash": 1}


def test_stale_agent_is_detected_and_replaced(machine: Responder, backend: AgentBackend) -> None:
    machine.install_agent(b"# agent.ps1 from an older rdplab\r\n")
    assert backend.agent_state() == "stale"
    assert backend.ensure_agent().startswith("agent stale: installed in ")
    assert machine.agent_file() == agent_source()
    assert backend.agent_state() == "current"


def test_stale_agent_answer_is_refused(machine: Responder, backend: AgentBackend) -> None:
    """Even without the hash check, every answer carries the agent's version."""
    machine.install_agent(b"# agent.ps1 from an older rdplab\r\n")
    with pytest.raises(BackendError, match=r"^127\.0\.0\.1: the agent on the machine is stale"):
        backend.gather()


def test_missing_agent_without_install_names_the_host(
    machine: Responder, backend: AgentBackend
) -> None:
    with pytest.raises(BackendError) as info:
        backend.ensure_agent(install=False)
    assert info.value.host == "127.0.0.1"
    assert str(info.value) == (
        f"127.0.0.1: the rdplab agent at {AGENT_PATH} is missing; run with agent install enabled"
    )
    assert machine.kinds == {"hash": 1}  # looked, uploaded nothing


def test_calling_a_missing_agent_is_a_clear_error(
    machine: Responder, backend: AgentBackend
) -> None:
    with pytest.raises(BackendError, match=r"-File parameter does not exist") as info:
        backend.gather()
    assert "127.0.0.1: the agent answered something that is not JSON (exit 64)" in str(info.value)


# -- calls ------------------------------------------------------------------------------------
def test_gather_is_one_command_and_returns_facts(
    machine: Responder, installed: AgentBackend
) -> None:
    facts = installed.gather({"ports": [3389]})
    assert facts.machine == "127.0.0.1"
    assert facts.raw["computer"]["name"] == "HOST"
    assert facts.raw == machine.twin.gather({"ports": [3389]})
    assert machine.kinds == {"call": 1}
    assert installed.calls.total == 1


def test_apply_batch_is_one_command(machine: Responder, installed: AgentBackend) -> None:
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
    assert machine.twin.lookup(RDP_TCP, "PortNumber") == 3390
    assert not machine.twin.services.running("TermService")
    assert machine.kinds == {"call": 1}
    assert [r.op for r in installed.journal] == ["reg.set", "svc.stop"]


def test_failed_op_rolls_back_the_batch(machine: Responder, installed: AgentBackend) -> None:
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
    assert machine.twin.lookup(RDP_TCP, "PortNumber") == 3389
    assert installed.journal == []


def test_output_split_across_several_receives(machine: Responder, installed: AgentBackend) -> None:
    machine.receive_chunk = 700
    facts = installed.gather()
    assert machine.last_command is not None
    assert machine.last_command.receives >= 3, "the answer should need several Receive calls"
    assert facts.raw == machine.twin.gather({})
    assert machine.kinds == {"call": 1}


def test_receive_operation_timeouts_are_retried(
    machine: Responder, installed: AgentBackend
) -> None:
    """A long-running command: WinRM answers Receive with its OperationTimeout fault."""
    machine.receive_timeouts = 3
    installed.gather()
    assert machine.last_command is not None and machine.last_command.receives == 4
    assert machine.kinds == {"call": 1}


def test_stdin_in_several_sends(machine: Responder, installed: AgentBackend) -> None:
    assert isinstance(installed.transport, WinRMTransport)
    installed.transport.STDIN_CHUNK = 64
    ops = [Op("hosts.set", {"name": f"h{i}.rdplab.test", "address": "10.0.0.1"}) for i in range(5)]
    result = installed.apply(ops)
    assert result.changes == 5
    assert machine.sends > 5
    assert machine.kinds == {"call": 1}


def test_one_shell_for_every_command(machine: Responder) -> None:
    machine.install_agent()
    with winrm_to(machine) as t:
        b = AgentBackend("host", t, CallLog())
        b.ensure_agent()
        b.gather()
        b.apply([Op("dns.flush", {"name": "x", "expect": "1.2.3.4"})])
        assert machine.shells_opened == 1 and machine.shells_closed == 0
        assert t.commands == machine.command_count == 3
    assert machine.shells_closed == 1
    assert machine.signals == 3  # every command cleaned up


# -- failures ---------------------------------------------------------------------------------
def test_nonzero_exit_and_stderr(machine: Responder, backend: AgentBackend) -> None:
    machine.fail_next = (5, b"Access is denied.\r\n")
    res = backend.transport.run(commands.hash_command())
    assert (res.rc, res.stdout, res.stderr) == (5, b"", b"Access is denied.\r\n")

    res = backend.transport.run("whoami /all")
    assert res.rc == 1
    assert b"'whoami' is not recognized" in res.stderr

    machine.fail_next = (5, b"Access is denied.\r\n")
    with pytest.raises(BackendError) as info:
        backend.ensure_agent()
    assert str(info.value) == "127.0.0.1: checking the agent failed (exit 5): Access is denied."


def test_upload_failure_names_the_chunk(machine: Responder, backend: AgentBackend) -> None:
    machine.reset_counters()
    original = machine.execute

    def refuse_chunks(line: str, stdin: bytes) -> tuple[int, bytes, bytes]:
        if (
            machine.kinds["chunk"] == 2
            and machine.last_command
            and line == machine.last_command.line
        ):
            return 1, b"", b"There is not enough space on the disk.\r\n"
        return original(line, stdin)

    machine.execute = refuse_chunks  # type: ignore[method-assign]
    if math.ceil(len(base64.b64encode(agent_source())) / commands.CHUNK) < 2:
        pytest.skip("the agent fits in one chunk")
    with pytest.raises(BackendError, match=r"uploading the agent failed at chunk 1: There is not"):
        backend.ensure_agent()


def test_wrong_password_is_401_naming_host_and_user(machine: Responder) -> None:
    t = winrm_to(machine, password="Wr0ng-Pa55word!")
    with pytest.raises(BackendError) as info:
        t.open()
    msg = str(info.value)
    assert msg.startswith("127.0.0.1: authentication failed for user labadmin")
    assert "Wr0ng-Pa55word!" not in msg
    assert machine.auth_failures >= 1 and machine.shells_opened == 0


def test_connection_refused(tmp_path: Path) -> None:
    port = free_port()
    t = WinRMTransport(
        "127.0.0.1", port, "labadmin", "pw", auth="basic", allow_plaintext_basic=True
    )
    with pytest.raises(BackendError) as info:
        t.open()
    assert str(info.value) == (
        f"127.0.0.1: cannot reach http://127.0.0.1:{port}"
        " (connection refused: is WinRM listening on that port?)"
    )


def test_read_timeout(machine: Responder) -> None:
    machine.install_agent()
    with winrm_to(machine, read_timeout=2, operation_timeout=1) as t:
        machine.delay = 6
        with pytest.raises(BackendError) as info:
            t.run(commands.hash_command())
        machine.delay = 0
    assert str(info.value).startswith(
        f"127.0.0.1: timed out after 2s waiting for an answer from http://127.0.0.1:{machine.port}"
    )


def test_command_timeout(machine: Responder) -> None:
    machine.install_agent()
    machine.receive_timeouts = 10_000  # the command never finishes
    with winrm_to(machine, command_timeout=1.5) as t:
        with pytest.raises(BackendError, match=r"timed out after 1\.5s waiting for a command"):
            t.run(commands.hash_command())
        assert machine.signals == 1  # the hung command was terminated


def test_garbage_from_the_agent_names_the_host(machine: Responder, installed: AgentBackend) -> None:
    machine.garbage = True
    with pytest.raises(BackendError) as info:
        installed.gather()
    msg = str(info.value)
    assert msg.startswith("127.0.0.1: the agent answered something that is not JSON (exit 0):")
    assert "WARNING: something odd" in msg


def test_agent_error_exit_code(machine: Responder, installed: AgentBackend) -> None:
    """A request the agent cannot read: exit 2, stderr, nothing on stdout."""
    res = installed.transport.run(commands.call_command(), stdin=b"{not json")
    assert res.rc == 2 and res.stdout == b""
    assert res.stderr.startswith(b"rdplab agent: request is not JSON")


def test_plaintext_basic_needs_an_explicit_opt_in() -> None:
    with pytest.raises(ProviderError, match="password in the clear"):
        WinRMTransport("10.0.0.5", 5985, "labadmin", "pw", auth="basic")


def test_defaults() -> None:
    t = WinRMTransport("10.0.0.5", username="labadmin", password="pw")
    assert (t.auth, t.endpoint, t.validate_server_cert) == (
        "ntlm",
        "http://10.0.0.5:5985/wsman",
        True,
    )
    s = WinRMTransport("win.lab", username="labadmin", password="pw", auth="ssl")
    assert (s.endpoint, s.validate_server_cert) == ("https://win.lab:5986/wsman", True)
    with pytest.raises(ProviderError, match="read_timeout"):
        WinRMTransport("x", username="u", password="p", read_timeout=5, operation_timeout=5)


# -- NTLM -----------------------------------------------------------------------------------------
def test_ntlm_with_message_encryption(machine: Responder) -> None:
    """The default auth: NTLM over http, every SOAP message sealed (as Windows requires)."""
    machine.install_agent()
    with winrm_to(machine, auth="ntlm") as t:
        b = AgentBackend("host", t, CallLog())
        assert b.ensure_agent() == "agent current"
        assert b.gather().raw["computer"]["name"] == "HOST"
    assert machine.sealed_requests >= 8  # Create, 2 x (Command, Send?, Receive, Signal), Delete
    assert machine.auth_failures == 0


def test_ntlm_wrong_password(machine: Responder) -> None:
    with pytest.raises(BackendError) as info:
        winrm_to(machine, auth="ntlm", password="Wr0ng-Pa55word!").open()
    assert str(info.value).startswith("127.0.0.1: authentication failed for user labadmin (ntlm")
    assert "Wr0ng-Pa55word!" not in str(info.value)


# -- TLS --------------------------------------------------------------------------------------
def test_https_validates_the_server_certificate_by_default(tmp_path: Path) -> None:
    with responder(tls_dir=tmp_path) as r:
        r.install_agent()
        t = winrm_to(r)
        with pytest.raises(BackendError) as info:
            t.open()
        assert str(info.value).startswith(
            f"127.0.0.1: cannot reach https://127.0.0.1:{r.port} (TLS: certificate verify failed"
        )
        with winrm_to(r, ca_trust_path=r.ca_path) as trusted:
            assert AgentBackend("host", trusted, CallLog()).ensure_agent() == "agent current"
        with winrm_to(r, validate_server_cert=False) as unchecked:
            assert unchecked.run(commands.hash_command()).rc == 0


# -- secrets ----------------------------------------------------------------------------------
def test_the_password_never_shows(
    machine: Responder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in messages, reprs, exception args or log lines, even at DEBUG."""
    secret = machine.password
    basic = base64.b64encode(f"{machine.username}:{secret}".encode()).decode()
    wrong = "Wr0ng-But-Still-Secret!"
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)

    def record(exc: BaseException) -> None:
        seen.extend([str(exc), repr(exc), repr(exc.args), repr(vars(exc))])

    good = winrm_to(machine)
    seen.append(repr(good))
    seen.append(repr(vars(good)))
    with good:
        machine.install_agent(b"stale")
        for knob, value in (("garbage", True), ("fail_next", (1, b"boom"))):
            setattr(machine, knob, value)
            try:
                AgentBackend("host", good, CallLog()).gather()
            except BackendError as exc:
                record(exc)
            setattr(machine, knob, False if knob == "garbage" else None)
    for t in (
        winrm_to(machine, password=wrong),
        WinRMTransport("127.0.0.1", free_port(), "u", secret, "basic", allow_plaintext_basic=True),
        WinRMTransport("127.0.0.1", machine.port, "u", secret, "ntlm"),
        winrm_to(machine, auth="ntlm", password=wrong),
    ):
        seen.append(repr(t))
        with pytest.raises(BackendError) as info:
            t.open()
        record(info.value)
    with pytest.raises(TypeError):
        pickle.dumps(good)
    seen.extend(r.getMessage() for r in caplog.records)
    seen.append(caplog.text)
    text = "\n".join(seen)
    assert "authentication failed for user u" in text
    for s in (secret, basic, wrong):
        assert s not in text


# -- a whole scenario over WinRM ----------------------------------------------------------------
@pytest.fixture(scope="module")
def lab_provider() -> Iterator[LoopbackWinRMProvider]:
    with winrm_lab() as provider:
        yield provider


@pytest.mark.parametrize(
    "scenario_id", ["healthy", "firewall-blocked", "rdp-cert-corrupt", "licensing-cache-stale"]
)
def test_scenario_over_winrm(lab_provider: LoopbackWinRMProvider, scenario_id: str) -> None:
    scenario = load_lab(LAB_FILE).scenario(scenario_id)
    run = run_scenario(lab_provider, scenario)
    assert run.error is None, f"stopped at {run.failed_step}: {run.error}"
    assert {(f.fault, f.role) for f in run.findings} == scenario.expected()
    assert run.findings_after == []
    assert run.connection_after is not None and run.connection_after.ok
    assert run.unexpected_diff == {}
    # the budget: at most one command per machine per phase, and nothing else on the wire
    assert run.max_calls_per_machine_phase == 1, run.calls
    for role in ROLES:
        r = lab_provider.responders[role]
        logged = sum(n for key, n in run.calls.items() if key.startswith(f"{role}/"))
        assert lab_provider.wire_commands()[role] == logged, (role, r.kinds, run.calls)
        assert set(r.kinds) == {"call"}  # no install, no hash check during a scenario
        assert r.agent_file() == agent_source()


def test_benchmark_counts_commands_on_the_wire(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/lab_matrix.py --over winrm-loopback: the whole matrix through pywinrm,
    and the commands counted on the responders equal the calls the lab logged."""
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "lab_matrix.py"
    spec = importlib.util.spec_from_file_location("lab_matrix", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (
        module.main(["--json", "--repeat", "1", "--over", "winrm-loopback", "--workers", "1"]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["provider"] == "winrm-loopback"
    assert data["errors"] == []
    assert data["max_calls_per_machine_phase"] == 1
    for p in data["per_scenario"]:
        logged = {
            role: sum(n for k, n in p["calls_by_machine_phase"].items() if k.startswith(role))
            for role in ROLES
        }
        assert p["wire_commands"] == logged, p["scenario"]
