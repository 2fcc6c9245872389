"""The inventory provider end to end: real pywinrm (NTLM) and paramiko against the loopback
WS-Management responders and OpenSSH server, the live probe against the loopback RDP
responder, and the rollback journal undoing every break and fix on the twins behind them.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import rdplab.agent
import rdplab.backends.agent
from rdplab import windows as win
from rdplab.baselines import build_twin
from rdplab.errors import BackendError, LabFileError, ProviderError, RdplabError
from rdplab.lab import load_lab
from rdplab.network import Network
from rdplab.ops import render_op
from rdplab.providers import get_provider
from rdplab.providers.inventory import InventoryProvider, load_inventory
from rdplab.scenario import run_scenario
from rdplab.serve import RDPServer, serving

from .wsman_responder import Responder, responder

REPO = Path(__file__).resolve().parents[2]
LAB = load_lab(REPO / "labs" / "rdp-0x904.yaml")
SECRET = "S3cret-Lab-Pa55!"  # the responders' password (tests/loopback/wsman_responder.py)


@pytest.fixture
def agent_ready() -> bytes:
    """The agent rdplab uploads (the loopback machines answer with their twins)."""
    return rdplab.agent.agent_source()


def wire(twin: Any, net: Network) -> None:
    """On the lab network, as the sim provider wires its twins."""
    twin.zone = net.zone
    twin.http_reach = net.pki_address.__eq__


@dataclass
class WinRMLab:
    client: Responder
    host: Responder
    rdp: RDPServer
    inventory: Path

    def responders(self) -> dict[str, Responder]:
        return {"client": self.client, "host": self.host}


def rdp_lines(port: int) -> str:
    return f"    rdp_address: 127.0.0.1\n    rdp_port: {port}\n"


def machine_yaml(r: Responder, env: str, extra: str = "") -> str:
    return (
        f"    address: 127.0.0.1\n    transport: winrm\n    port: {r.port}\n"
        f"    username: {r.username}\n    password_env: {env}\n    auth: ntlm\n"
        f"    timeout: 10\n{extra}"
    )


@pytest.fixture
def winrm_lab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_ready: bytes
) -> Iterator[WinRMLab]:
    """Client and host: two loopback WinRM responders with twins of the lab's baselines;
    the host's RDP port: the loopback RDP responder. The inventory names them."""
    with make_winrm_lab(tmp_path, monkeypatch) as lab:
        yield lab


@contextmanager
def make_winrm_lab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_baseline: str = "windows-server-2022"
) -> Iterator[WinRMLab]:
    net = Network()
    with (
        responder(baseline="windows-11", computer_name="CLIENT") as client,
        responder(baseline=host_baseline, computer_name="HOST") as host,
        serving() as rdp,
        serving() as ws,
    ):
        wire(client.twin, net)
        wire(host.twin, net)
        follow_host(host, rdp, net, ws)
        monkeypatch.setenv("RDPLAB_TEST_CLIENT_PW", client.password)
        monkeypatch.setenv("RDPLAB_TEST_HOST_PW", host.password)
        inventory = tmp_path / "lab" / "inventory.yaml"
        inventory.parent.mkdir()
        inventory.write_text(
            "machines:\n  client:\n"
            + machine_yaml(client, "RDPLAB_TEST_CLIENT_PW")
            + "  host:\n"
            + machine_yaml(
                host,
                "RDPLAB_TEST_HOST_PW",
                f"    rdp_address: 127.0.0.1\n    rdp_port: {rdp.port}\n"
                f"    websocket_port: {ws.port}\n",
            )
            + "probe_timeout: 1\n"  # a dropped SYN waits this long
        )
        yield WinRMLab(client, host, rdp, inventory)


def follow_host(host: Responder, rdp: RDPServer, net: Network, ws: RDPServer | None = None) -> None:
    """The RDP responder plays the host twin's listener (and ``ws`` its WebSocket
    listener): after every command the host runs, it refuses, drops or answers as the
    twin's state says (rdplab.serve)."""
    original = host.execute

    def follow() -> None:
        rdp.follow(host.twin, net.port)
        if ws is not None:
            ws.follow(host.twin, win.WEBSOCKET_PORTS[0], win.WS_PROGRAM)

    def execute(line: str, stdin: bytes) -> tuple[int, bytes, bytes]:
        answer = original(line, stdin)
        follow()
        return answer

    host.execute = execute  # type: ignore[method-assign]
    follow()


def snapshots(lab: WinRMLab) -> dict[str, Any]:
    return {role: r.twin.snapshot() for role, r in lab.responders().items()}


# -- a whole scenario, and reset by the journal --------------------------------------------------
@pytest.mark.winrm_loopback
def test_healthy_scenario_over_winrm_with_the_live_probe(winrm_lab: WinRMLab) -> None:
    provider = InventoryProvider(winrm_lab.inventory)
    try:
        run = run_scenario(provider, LAB.scenario("healthy"))
    finally:
        provider.close()
    assert run.error is None, f"{run.failed_step}: {run.error}"
    assert run.findings == [] and run.unexpected_diff == {}
    conn = run.connection
    assert conn is not None and conn.ok, conn
    assert [s.name for s in conn.stages] == ["name-resolution", "tcp", "x224", "tls", "credssp"]
    assert conn.stages[0].detail == (
        "host.rdplab.test -> 192.168.56.11 (from the client's lab DNS zone (the client's DNS"
        f" server itself was not queried)); probed at 127.0.0.1:{winrm_lab.rdp.port}"
    )
    assert f"thumbprint {winrm_lab.rdp.thumbprint}" in conn.stages[3].detail
    # three times: connect before the break, connect, verify-connect
    assert conn.credssp_version == 6 and winrm_lab.rdp.ts_requests == [6, 6, 6]
    assert "TSRequest version 6 ('Mitigated')" in conn.stages[4].detail
    assert "authentication itself not probed" in conn.stages[4].detail
    assert set(conn.not_probed) == {"licensing"}
    # the budget on the wire: one command per machine per phase, nothing else
    assert run.max_calls_per_machine_phase == 1, run.calls
    for role, r in winrm_lab.responders().items():
        assert r.shells_opened == 1  # one shell for the whole session
        logged = sum(n for key, n in run.calls.items() if key.startswith(f"{role}/"))
        assert r.kinds["call"] == logged + 1, (role, r.kinds)  # + the baseline gather
        assert r.kinds["hash"] == 1  # the agent is checked once per machine


@pytest.mark.winrm_loopback
@pytest.mark.parametrize(
    ("scenario_id", "evidence"),
    [
        ("cert-revocation-unreachable", "revocation check failed on the client for *crl*"),
        ("firewall-websocket-blocked-client", "the client's firewall drops outbound TCP 3387*"),
        ("dns-stale-record", "* 192.168.56.99:*"),  # the stale answer is dialled
    ],
)
def test_client_side_stages_on_a_real_lab(
    winrm_lab: WinRMLab, scenario_id: str, evidence: str
) -> None:
    """What mstsc decides on the client is checked from the client: its answer for the
    host's name, its outbound rules, its revocation check of the probed certificate."""
    provider = InventoryProvider(winrm_lab.inventory)
    try:
        run = run_scenario(provider, LAB.scenario(scenario_id))
    finally:
        provider.close()
    assert run.error is None, f"{run.failed_step}: {run.error}"
    conn, after = run.connection, run.connection_after
    assert conn is not None and not conn.ok
    assert fnmatch.fnmatch(conn.evidence, evidence), conn.evidence
    assert after is not None and after.ok, after
    assert run.max_calls_per_machine_phase == 1, run.calls


@pytest.mark.winrm_loopback
@pytest.mark.parametrize("allow_lowers_security", [False, True])
def test_credssp_oracle_mismatch_seen_on_the_wire(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    agent_ready: bytes,
    allow_lowers_security: bool,
) -> None:
    """The unpatched host answers an old CredSSP version to the probe's TSRequest; with
    the client forcing updated peers, mstsc's decision (KB 4093492) fails the credssp
    stage. The safe fix (the update) or the opted-in workaround lets it through."""
    scenario = LAB.scenario(
        "credssp-oracle-mismatch-workaround" if allow_lowers_security else "credssp-oracle-mismatch"
    )
    with make_winrm_lab(tmp_path, monkeypatch, "windows-server-2016-1607") as lab:
        provider = InventoryProvider(lab.inventory)
        try:
            run = run_scenario(provider, scenario)
        finally:
            provider.close()
    assert run.error is None, f"{run.failed_step}: {run.error}"
    conn, after = run.connection, run.connection_after
    assert conn is not None and conn.failed_stage == "credssp", conn
    assert (conn.error_code, conn.extended_code) == (None, None)  # its own dialog, not 0x904
    assert "TSRequest version 3 ('not updated')" in conn.evidence
    assert "'Force Updated Clients'" in conn.evidence
    assert after is not None and after.ok and after.stages[-1].name == "credssp", after
    expected_after = 3 if allow_lowers_security else 6  # workaround: the host stays old
    assert after.credssp_version == expected_after
    assert run.max_calls_per_machine_phase == 1, run.calls


FAULTED = [
    "firewall-blocked",
    "firewall-blocked-block-rule",
    "rdp-disabled-policy",
    "listener-port-changed",
    "termservice-stopped",
    "security-layer-mismatch",
    "licensing-cache-stale",
    "dns-stale-record",
    "firewall-and-licensing",
]


@pytest.mark.winrm_loopback
def test_reset_replays_the_journal_back_to_the_baseline(winrm_lab: WinRMLab) -> None:
    """Each faulted scenario runs whole over WinRM (break, fix, fix again) and the reset
    replays the journal; then its breaks alone are applied (a run that stopped there) and
    the reset undoes them. Every time the twins end exactly as they began."""
    provider = InventoryProvider(winrm_lab.inventory)
    provider.always_restore = True  # the journal's replay, not the cheaper-reset rule
    try:
        provider.reset(LAB.scenario("healthy"))
        baseline = snapshots(winrm_lab)
        for sid in FAULTED:
            scenario = LAB.scenario(sid)
            run = run_scenario(provider, scenario)
            assert run.error is None, f"{sid}: {run.failed_step}: {run.error}"
            assert {(f.fault, f.role) for f in run.findings} == scenario.expected(), sid
            assert run.findings_after == [], sid
            _reset_and_compare(provider, winrm_lab, scenario, baseline, ("break", "fix"))

            machines = provider.reset(scenario)
            ctx = scenario.network.context()
            for role in ("client", "host"):
                ops = [
                    render_op(o, ctx)
                    for pf in scenario.faults
                    for o in pf.placement.breaks.get(role, ())
                ]
                if ops:
                    machines.calls.phase = "break"
                    assert machines.backend(role).apply(ops).changes > 0
            assert snapshots(winrm_lab) != baseline, sid
            _reset_and_compare(provider, winrm_lab, scenario, baseline, ("break",))
    finally:
        provider.close()
    assert provider.reset_notes == []
    assert provider.journal_dir == winrm_lab.inventory.parent / ".rdplab-journal"


def _reset_and_compare(
    provider: InventoryProvider,
    lab: WinRMLab,
    scenario: Any,
    baseline: dict[str, Any],
    phases: tuple[str, ...],
) -> None:
    journals = {role: provider.journal(role) for role in ("client", "host")}
    assert any(journals.values()), scenario.id
    for role, entries in journals.items():
        for e in entries:
            assert e["role"] == role and e["phase"] in phases, e
            assert e["irreversible"] == [], (scenario.id, e["ops"])
        # a fix that removes what the break added needs no inverse of its own
        assert not entries or any(e["inverse"] for e in entries), scenario.id
    for r in lab.responders().values():
        r.reset_counters()
    provider.reset(scenario)
    assert snapshots(lab) == baseline, f"{scenario.id}: reset did not restore"
    for role, r in lab.responders().items():
        assert provider.journal(role) == []
        if journals[role]:
            assert provider.journal_path(role).read_text() == ""  # truncated
        # the rollback is one batch per machine that had changes, and nothing else
        assert r.kinds == ({"call": 1} if journals[role] else {}), (scenario.id, role)


@pytest.mark.winrm_loopback
def test_a_crashed_run_is_rolled_back_by_the_next(winrm_lab: WinRMLab) -> None:
    scenario = LAB.scenario("rdp-disabled-policy")
    first = InventoryProvider(winrm_lab.inventory)
    machines = first.reset(scenario)
    baseline = snapshots(winrm_lab)
    ctx = scenario.network.context()
    ops = [render_op(o, ctx) for pf in scenario.faults for o in pf.placement.breaks["host"]]
    assert machines.host.apply(ops).changes > 0
    first.close()  # the run dies here: no reset
    assert snapshots(winrm_lab) != baseline
    lines = first.journal_path("host").read_text().splitlines()
    assert len(lines) == 1 and '"reg.restore"' in lines[0]

    second = InventoryProvider(winrm_lab.inventory)
    try:
        second.reset(scenario)
    finally:
        second.close()
    assert snapshots(winrm_lab) == baseline
    assert second.journal("host") == []


# -- the plugin: tests/test_lab.py unchanged on the inventory provider ---------------------------
def run_lab_suite(
    pytester: pytest.Pytester, lab: WinRMLab, scenarios: list[str], *extra: str
) -> pytest.RunResult:
    """tests/test_lab.py, copied unchanged, on the inventory of ``lab``, for ``scenarios``.
    In a subprocess: an in-process run would import pywinrm's requests stack first and
    unload it afterwards, splitting its classes in two for every later test."""
    shutil.copy(REPO / "tests" / "test_lab.py", pytester.path / "test_inventory_lab.py")
    return pytester.runpytest_subprocess(
        "--lab-provider=inventory",
        f"--lab-inventory={lab.inventory}",
        f"--lab-file={REPO / 'labs' / 'rdp-0x904.yaml'}",
        "-k",
        " or ".join(f"[{sid}]" for sid in scenarios),
        "-p",
        "no:cacheprovider",
        *extra,
    )


@pytest.mark.winrm_loopback
def test_lab_suite_runs_on_the_inventory_provider(
    winrm_lab: WinRMLab, pytester: pytest.Pytester
) -> None:
    result = run_lab_suite(pytester, winrm_lab, ["healthy"], "-v")
    result.stdout.fnmatch_lines(["*provider inventory*"])
    # test_healthy, test_no_collateral, test_call_budget for the healthy scenario
    result.assert_outcomes(passed=3)
    calls = {role: r.kinds["call"] for role, r in winrm_lab.responders().items()}
    # baseline snapshot, gather, verify-gather, diff snapshot + one set-up gather each
    assert calls == {"client": 5, "host": 5}


HOST_SIDE = [
    "firewall-blocked",
    "firewall-blocked-block-rule",
    "rdp-disabled",
    "rdp-disabled-policy",
    "listener-port-changed",
    "termservice-stopped",
    "security-layer-mismatch",
    "rdp-cert-corrupt",
    "firewall-websocket-blocked-host",
]


@pytest.mark.winrm_loopback
def test_lab_suite_host_faults_on_the_inventory_provider(
    winrm_lab: WinRMLab, pytester: pytest.Pytester
) -> None:
    """The faults the probe can see (on the host's listener): every aspect of test_lab.py
    passes, the symptom included (timeout, refused, SSL_NOT_ALLOWED_BY_SERVER, TLS)."""
    result = run_lab_suite(pytester, winrm_lab, HOST_SIDE, "-q")
    # 7 aspects for each faulted scenario (test_no_collateral included: real machines'
    # snapshots are the facts, put in the twin's shape by Backend.snapshot)
    result.assert_outcomes(passed=7 * len(HOST_SIDE))


CLIENT_SIDE = [
    "dns-stale-record",
    "dns-stale-record-cache",
    "cert-revocation-unreachable",
    "cert-revocation-unreachable-workaround",
    "firewall-websocket-blocked-client",
    "licensing-cache-stale",
]


@pytest.mark.winrm_loopback
def test_lab_suite_client_faults_on_the_inventory_provider(
    winrm_lab: WinRMLab, pytester: pytest.Pytester
) -> None:
    """Faults mstsc meets on the client: the stale name is dialled as the client resolves
    it, the client's outbound rules stop the SYN, the revocation check fetches the CRL of
    the certificate the probe received from the client itself. Licensing happens inside a
    session, which the probe never reaches: its symptom is the one skip, with the reason."""
    result = run_lab_suite(
        pytester,
        winrm_lab,
        CLIENT_SIDE,
        "-rs",
        "-q",
        "--html=out/lab.html",
        "--self-contained-html",
    )
    result.assert_outcomes(passed=7 * len(CLIENT_SIDE) - 1, skipped=1)
    page = (pytester.path / "out" / "lab.html").read_text()
    assert "provider <code>inventory</code>: existing Windows machines from inventory.yaml" in page
    assert "in-process Windows twin" not in page
    result.stdout.fnmatch_lines(
        ["SKIPPED*the licensing stage cannot be seen by the live probe on inventory*session*"]
    )


@pytest.mark.winrm_loopback
def test_testinfra_host_fixture_on_the_inventory_provider(
    winrm_lab: WinRMLab, pytester: pytest.Pytester
) -> None:
    """The plugin's ``testinfra_host`` fixture: one pytest-testinfra Host per lab machine,
    its commands through the lab's own WinRM shells (counted on the responders)."""
    pytester.makepyfile(
        test_mine="""
        def test_name(testinfra_host):
            assert testinfra_host.run("hostname").stdout.strip() in ("CLIENT", "HOST")
            assert testinfra_host.backend.NAME == "winrm"
        """
    )
    before = {role: r.command_count for role, r in winrm_lab.responders().items()}
    # a subprocess: pytester's in-process run would unload the modules testinfra imports
    # afterwards, leaving requests' classes split in two for later tests
    result = pytester.runpytest_subprocess(
        "--lab-provider=inventory", f"--lab-inventory={winrm_lab.inventory}", "-q"
    )
    result.assert_outcomes(passed=2)
    for role, r in winrm_lab.responders().items():
        assert "other" in r.kinds and r.command_count > before[role], (role, r.kinds)


@pytest.mark.winrm_loopback
def test_contract_cases_on_the_inventory_machines(winrm_lab: WinRMLab) -> None:
    """The README's command for the agent contract on real Windows, against the inventory's
    machines: every case of fixtures/contract gets a ``real`` run through pywinrm, with
    the machine restored (rollback journal) before and after it."""
    cases = len(list((REPO / "fixtures" / "contract").glob("*.json")))
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "tests/contract", "-k", "real"),
            *("--lab-provider=inventory", f"--lab-inventory={winrm_lab.inventory}"),
            *("-q", "-p", "no:cacheprovider"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"{cases} passed" in proc.stdout
    assert winrm_lab.host.kinds["call"] > cases and winrm_lab.client.kinds["call"] > 0


def test_plugin_rejects_a_bad_inventory_before_running(pytester: pytest.Pytester) -> None:
    shutil.copy(REPO / "tests" / "test_lab.py", pytester.path / "test_inventory_lab.py")
    bad = pytester.path / "inv.yaml"
    bad.write_text("machines:\n  client: {}\n")
    result = pytester.runpytest("--lab-provider=inventory", f"--lab-inventory={bad}")
    assert result.ret != 0
    result.stderr.fnmatch_lines([f"*rdplab: {bad}:2: machines.client.address: required*"])


# -- credentials -----------------------------------------------------------------------------------
@pytest.mark.winrm_loopback
def test_missing_password_variable_names_host_and_variable(
    winrm_lab: WinRMLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RDPLAB_TEST_HOST_PW")
    provider = InventoryProvider(winrm_lab.inventory)
    try:
        with pytest.raises(ProviderError) as info:
            provider.reset(LAB.scenario("healthy"))
    finally:
        provider.close()
    msg = str(info.value)
    assert msg == (
        "127.0.0.1 (host): the environment variable RDPLAB_TEST_HOST_PW is not set; it holds"
        f" the password ({winrm_lab.inventory}:15: machines.host.password_env)"
    )
    assert SECRET not in msg and SECRET not in repr(info.value.args)


@pytest.mark.winrm_loopback
def test_wrong_password_names_the_host_not_the_password(
    winrm_lab: WinRMLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "Wr0ng-Inventory-Pa55!"
    monkeypatch.setenv("RDPLAB_TEST_CLIENT_PW", wrong)
    provider = InventoryProvider(winrm_lab.inventory)
    try:
        with pytest.raises(BackendError) as info:
            provider.reset(LAB.scenario("healthy"))
    finally:
        provider.close()
    msg = str(info.value)
    assert msg.startswith("127.0.0.1: authentication failed for user labadmin (ntlm at http://")
    assert f":{winrm_lab.client.port})" in msg
    for text in (msg, repr(info.value.args), repr(provider), repr(vars(provider))):
        assert wrong not in text and SECRET not in text


@pytest.mark.winrm_loopback
def test_password_from_the_keyring(
    winrm_lab: WinRMLab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import keyring
    from keyring.backend import KeyringBackend

    class Memory(KeyringBackend):
        priority = 1  # type: ignore[assignment]
        entries: dict[tuple[str, str], str] = {("rdplab-test", "labadmin"): SECRET}

        def get_password(self, service: str, username: str) -> str | None:
            return self.entries.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.entries[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            self.entries.pop((service, username), None)

    previous = keyring.get_keyring()
    keyring.set_keyring(Memory())
    try:
        text = winrm_lab.inventory.read_text()
        winrm_lab.inventory.write_text(
            text.replace("password_env: RDPLAB_TEST_HOST_PW", "keyring: rdplab-test/labadmin")
        )
        provider = InventoryProvider(winrm_lab.inventory)
        try:
            machines = provider.reset(LAB.scenario("healthy"))
            assert machines.host.gather({}).raw["computer"]["name"] == "HOST"
        finally:
            provider.close()
        winrm_lab.inventory.write_text(
            text.replace("password_env: RDPLAB_TEST_HOST_PW", "keyring: rdplab-test/nobody")
        )
        provider = InventoryProvider(winrm_lab.inventory)
        try:
            with pytest.raises(ProviderError) as info:
                provider.reset(LAB.scenario("healthy"))
        finally:
            provider.close()
        assert str(info.value) == (
            "127.0.0.1 (host): keyring has no password for service 'rdplab-test' user"
            " 'nobody' (keyring set rdplab-test nobody)"
        )
    finally:
        keyring.set_keyring(previous)


# -- the file --------------------------------------------------------------------------------------
def _inventory(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return path


GOOD = """\
machines:
  client:
    address: 192.168.56.10
    transport: winrm
    username: labadmin
    password_env: RDPLAB_PASSWORD
  host:
    address: 192.168.56.11
    transport: ssh
    username: labadmin
    key_file: ~/.ssh/id_ed25519
"""


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            GOOD.replace("password_env: RDPLAB_PASSWORD", "password: hunter2-secret"),
            ":6: machines.client.password",
            "secrets never go in the inventory",
        ),
        (
            GOOD.replace("key_file: ~/.ssh/id_ed25519", "passphrase: hunter2-secret"),
            ":11: machines.host.passphrase",
            "secrets never go in the inventory",
        ),
        (
            GOOD.replace("    password_env: RDPLAB_PASSWORD\n", ""),
            ":2: machines.client",
            "WinRM needs password_env: VAR or keyring: service/user",
        ),
        (
            GOOD.replace("key_file: ~/.ssh/id_ed25519", "auth: ntlm"),
            ":11: machines.host.auth",
            "only for the other transport, not ssh",
        ),
        (
            GOOD.replace("transport: ssh", "transport: rdp"),
            ":9: machines.host.transport",
            "Input should be 'winrm' or 'ssh'",
        ),
        (
            GOOD.replace("RDPLAB_PASSWORD", "RDPLAB_PASSWORD\n    keyring: svc/user"),
            ":7: machines.client.keyring",
            "give password_env or keyring, not both",
        ),
        (
            GOOD + "    rdp_port: 70000\n",
            ":12: machines.host.rdp_port",
            "less than or equal to 65535",
        ),
    ],
)
def test_inventory_errors_name_file_line_field(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = _inventory(tmp_path, text)
    with pytest.raises(LabFileError) as info:
        load_inventory(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}{where}: "), msg
    assert message in msg
    assert "hunter2-secret" not in msg


def test_example_inventory_is_valid() -> None:
    spec, _ = load_inventory(REPO / "fixtures" / "inventory.example.yaml")
    assert spec.machines.client.transport == "winrm"
    assert spec.machines.host.address == "192.168.56.11"


def test_get_provider_passes_only_the_options_a_provider_takes(tmp_path: Path) -> None:
    path = _inventory(tmp_path, GOOD)
    provider = get_provider("inventory", inventory=path, teardown=True, root=tmp_path)
    assert isinstance(provider, InventoryProvider) and provider.path == path
    assert get_provider("sim", inventory=path, teardown=True).name == "sim"
    with pytest.raises(LabFileError, match="file not found"):
        get_provider("inventory", inventory=tmp_path / "missing.yaml")
    with pytest.raises(RdplabError, match="unknown provider 'nope'"):
        get_provider("nope")


# -- SSH ----------------------------------------------------------------------------------------
@pytest.mark.ssh_loopback
def test_host_over_ssh_client_over_winrm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_ready: bytes
) -> None:
    """A mixed inventory: the host is reached by paramiko with a key and strict
    known_hosts, the client by pywinrm; a faulted scenario and its rollback."""
    from .ssh_server import ssh_server

    net = Network()
    with (
        responder(baseline="windows-11", computer_name="CLIENT") as client,
        ssh_server(tmp_path / "sshd") as host,
        serving() as rdp,
    ):
        wire(client.twin, net)
        twin = build_twin("windows-server-2022", "HOST")
        twin.zone = net.zone
        twin.http_reach = frozenset({net.pki_address}).__contains__  # pickles
        host.set_twin(twin)
        monkeypatch.setenv("RDPLAB_TEST_CLIENT_PW", client.password)
        inventory = _inventory(
            tmp_path,
            "machines:\n  client:\n"
            + machine_yaml(client, "RDPLAB_TEST_CLIENT_PW")
            + "  host:\n    address: 127.0.0.1\n    transport: ssh\n"
            f"    port: {host.port}\n    username: {host.user}\n"
            f"    key_file: {host.client_key}\n    known_hosts: {host.known_hosts}\n"
            f"    rdp_port: {rdp.port}\n",
        )
        provider = InventoryProvider(inventory)
        provider.always_restore = True  # the journal's replay, not the cheaper-reset rule
        try:
            provider.reset(LAB.scenario("healthy"))
            baseline = host.twin().snapshot()
            run = run_scenario(provider, LAB.scenario("listener-port-changed"))
            assert run.error is None, f"{run.failed_step}: {run.error}"
            assert {(f.fault, f.role) for f in run.findings} == {("listener-port-changed", "host")}
            assert run.max_calls_per_machine_phase == 1
            assert provider.journal("host")
            assert run.connection_after is not None and run.connection_after.ok
            provider.reset(LAB.scenario("healthy"))
            assert host.twin().snapshot() == baseline
            assert provider.journal("host") == []
            # testinfra hosts ride the same connections: paramiko to the host, pywinrm to
            # the client, no password in any URL or repr
            for role, name, kind in (
                ("host", "HOST", "paramiko"),
                ("client", "CLIENT", "winrm"),
            ):
                ti = provider.testinfra_host(role)
                assert kind == ti.backend.NAME
                assert ti.run("hostname").stdout.strip() == name
                assert ti.run("nosuchcommand").rc == 1
                assert client.password not in repr(ti.backend) + repr(vars(ti.backend))
        finally:
            provider.close()
        assert os.path.basename(provider.journal_path("host")) == f"127.0.0.1_{host.port}.jsonl"


@pytest.mark.real_windows
def test_inventory_of_real_windows_machines() -> None:
    """The healthy scenario on the machines of the inventory named by RDPLAB_INVENTORY."""
    path = os.environ.get("RDPLAB_INVENTORY")
    if not path:
        pytest.skip(
            "needs real Windows machines: set RDPLAB_INVENTORY to an inventory file"
            " (docs/real-windows.md)"
        )
    provider = InventoryProvider(path)
    try:
        run = run_scenario(provider, LAB.scenario("healthy"))
        provider.reset(LAB.scenario("healthy"))
    finally:
        provider.close()
    assert run.error is None, f"{run.failed_step}: {run.error}"
    assert run.connection is not None and run.connection.ok, run.connection
    assert run.max_calls_per_machine_phase == 1


# -- the router: a Linux gateway over SSH (machines.router) ---------------------------------------
NET_LAB = load_lab(REPO / "labs" / "network.yaml")
ROUTER_GOOD = (
    GOOD
    + """\
  router:
    address: 192.168.56.1
    username: root
    key_file: ~/.ssh/id_ed25519
    known_hosts: ~/.ssh/known_hosts
    lan_interface: eth1
    outside_interface: eth0
    client_link: wg0
"""
)


def router_yaml(server: Any, lan: str, outside: str) -> str:
    return (
        "  router:\n    address: 127.0.0.1\n    transport: ssh\n"
        f"    port: {server.port}\n    username: {server.user}\n"
        f"    key_file: {server.client_key}\n    known_hosts: {server.known_hosts}\n"
        f"    lan_interface: {lan}\n    outside_interface: {outside}\n"
        f"    client_link: {outside}\n    timeout: 10\n"
    )


@pytest.mark.winrm_loopback
@pytest.mark.ssh_loopback
@pytest.mark.netns
def test_router_entry_hands_out_the_router_and_resets_it(
    winrm_lab: WinRMLab, tmp_path: Path
) -> None:
    """An inventory with a router: a scenario whose lab has one gets an SSHRouterBackend
    (a real sshd into a lab router namespace); its baseline is kept next to the journal,
    and every reset, in this run or the next, brings its rules back in one command."""
    import json

    from rdplab.backends.router_ssh import SSHRouterBackend
    from rdplab.ops import Op

    from .test_router_ssh import router_lab

    with router_lab(tmp_path / "router") as lab:
        lab.provision_forward()  # the router's healthy state: RDP forwarded to the host
        for r in winrm_lab.responders().values():
            r.install_agent()  # machines with the agent already (no upload to wait for)
        text = winrm_lab.inventory.read_text().replace(
            "probe_timeout: 1\n",
            router_yaml(lab.server, lab.lan_interface, lab.outside_interface)
            + "probe_timeout: 1\n",
        )
        winrm_lab.inventory.write_text(text)
        scenario = NET_LAB.scenario("port-forward-missing")
        provider = InventoryProvider(winrm_lab.inventory)
        try:
            assert "router 127.0.0.1 (Linux, SSH)" in provider.runs_on
            provider.preflight()  # the router's port too
            machines = provider.reset(scenario)
            router = machines.router
            assert isinstance(router, SSHRouterBackend) and router.sudo is False
            assert machines.backend("router") is router
            saved = provider.router_baseline_path()
            assert saved.name == f"router_127.0.0.1_{lab.server.port}.baseline.json"
            assert saved.parent == winrm_lab.inventory.parent / ".rdplab-journal"
            base = json.loads(saved.read_text())
            assert base["forwards"] == {
                "3389": {"port": 3389, "to": "192.168.56.11", "to_port": 3389}
            }
            assert base["addresses"] == {"lan": "192.168.56.1", "outside": "203.0.113.1"}
            broken = [Op("fwd.remove", {"port": 3389}), Op("icmp.frag", {"allow": False})]
            assert router.apply(broken).changes == 2
        finally:
            provider.close()  # as a crashed run would leave it: broken
        again = InventoryProvider(winrm_lab.inventory)
        try:
            again.reset(scenario)  # the next run: the saved baseline, not the broken router
            assert again.router is not None and again.router.snapshot() == base
        finally:
            again.close()


def test_router_scenario_without_a_router_entry(tmp_path: Path) -> None:
    path = _inventory(tmp_path, GOOD)
    provider = InventoryProvider(path)
    assert provider.testinfra_host("router") is None  # the testinfra fixture then skips
    with pytest.raises(ProviderError) as info:
        provider.router_machine(NET_LAB.scenario("port-forward-missing"))
    assert str(info.value) == (
        f"{path}: machines.router is missing: scenario port-forward-missing has a router"
        " (network.router in its lab file); add a router entry with address, username,"
        " key_file or password_env, and known_hosts (docs/real-windows.md)"
    )


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            ROUTER_GOOD.replace(
                "key_file: ~/.ssh/id_ed25519\n    known", "password: hunter2-secret\n    known"
            ),
            ":15: machines.router.password",
            "secrets never go in the inventory",
        ),
        (
            ROUTER_GOOD.replace("    client_link: wg0\n", "    transport: winrm\n"),
            ":19: machines.router.transport",
            "Input should be 'ssh'",
        ),
        (
            ROUTER_GOOD + "    auth: ntlm\n",
            ":20: machines.router.auth",
            "unknown field",
        ),
        (
            ROUTER_GOOD.replace("lan_interface: eth1", "lan_interface: eth1; reboot"),
            ":17: machines.router.lan_interface",
            "String should match pattern",
        ),
        (
            ROUTER_GOOD + "    password_env: RDPLAB_ROUTER_PW\n    keyring: rdplab/root\n",
            ":21: machines.router.keyring",
            "give password_env or keyring, not both",
        ),
    ],
)  # fmt: skip
def test_router_entry_errors_name_file_line_field(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = _inventory(tmp_path, text)
    with pytest.raises(LabFileError) as info:
        load_inventory(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}{where}: "), msg
    assert message in msg
    assert "hunter2-secret" not in msg


def test_router_entry_and_its_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, _ = load_inventory(_inventory(tmp_path, ROUTER_GOOD))
    router = spec.machines.router
    assert router is not None
    assert (router.transport, router.client_link, router.sudo) == ("ssh", "wg0", False)
    text = ROUTER_GOOD.replace("key_file: ~/.ssh/id_ed25519", "password_env: RDPLAB_ROUTER_PW")
    provider = InventoryProvider(_inventory(tmp_path, text))
    monkeypatch.delenv("RDPLAB_ROUTER_PW", raising=False)
    with pytest.raises(ProviderError) as info:
        provider.check_credentials("router")
    assert str(info.value) == (
        "192.168.56.1 (router): the environment variable RDPLAB_ROUTER_PW is not set; it holds"
        f" the password ({tmp_path / 'inventory.yaml'}:15: machines.router.password_env)"
    )
    monkeypatch.setenv("RDPLAB_ROUTER_PW", "Router-Secret-7")
    backend = provider.open_router()
    assert backend is not None
    assert backend.transport.port == 22 and backend.lan_interface == "eth1"
    assert "Router-Secret-7" not in repr(backend) + repr(vars(backend.transport))


def test_example_inventory_has_a_router() -> None:
    spec, _ = load_inventory(REPO / "fixtures" / "inventory.example.yaml")
    router = spec.machines.router
    assert router is not None
    assert (router.address, router.lan_interface, router.sudo) == ("192.168.56.1", "eth1", True)
