"""``rdplab diagnose`` as a user runs it (a subprocess): on the sim, and on the loopback
WinRM machines through an inventory (pywinrm with NTLM, the live probe against the RDP
responder that follows the host twin), read-only; and every error path as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rdplab.lab import Scenario, load_lab
from rdplab.providers.sim import scenario_twin
from rdplab.scenario import break_plan

from .test_provider_inventory import SECRET, WinRMLab, make_winrm_lab, snapshots

REPO = Path(__file__).resolve().parents[2]
LAB_FILE = REPO / "labs" / "rdp-0x904.yaml"
LAB = load_lab(LAB_FILE)


def rdplab(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "rdplab", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
    return lines[0]


def place(lab: WinRMLab, scenario: Scenario) -> None:
    """The scenario's faults on the loopback machines: fresh twins of its baselines with
    its break ops applied (as a trainer would have broken real machines by hand)."""
    for role, r in lab.responders().items():
        r.twin = scenario_twin(scenario, role)  # type: ignore[arg-type]
    for role, ops in break_plan(scenario).items():
        result = lab.responders()[role].twin.apply(ops)
        assert not result.errors, result


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WinRMLab]:
    with make_winrm_lab(tmp_path, monkeypatch) as made:
        for r in made.responders().values():
            r.install_agent()  # installed by a first run; --install-agent is tested below
        yield made


# -- the sim ------------------------------------------------------------------------------------
def test_sim_scenario_is_broken_then_diagnosed(tmp_path: Path) -> None:
    page = tmp_path / "diag.html"
    proc = rdplab(
        "diagnose", "--lab-file", str(LAB_FILE), "--scenario", "cert-and-dns", "--json",
        "--html", str(page),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["provider"] == "sim" and doc["scenario"] == "cert-and-dns"
    assert {(f["fault"], f["role"]) for f in doc["findings"]} == {
        ("rdp-cert-corrupt", "host"),
        ("dns-stale-record", "client"),
    }
    assert all(f["evidence"] and f["summary"] for f in doc["findings"])
    conn = doc["connection"]
    assert conn["failed_stage"] == "tcp"
    assert (conn["error_code"], conn["extended_code"]) == ("0x904", "0x7")
    assert [s["name"] for s in conn["stages"]] == ["name-resolution", "tcp"]
    fixes = {(x["fault"], x["fix"], x["risk"]) for x in doc["fixes"]}
    assert fixes == {
        ("rdp-cert-corrupt", "regenerate", "safe"),
        ("dns-stale-record", "correct-resolution", "safe"),
    }
    assert doc["fixes"][0]["command"].startswith(
        f"rdplab fix --lab-file {LAB_FILE} --scenario cert-and-dns --fault "
    )
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "rdp-cert-corrupt on host" in text
    assert "correct-resolution" in text and "fails at tcp" in text


def test_sim_text_output_and_risky_fixes() -> None:
    proc = rdplab("diagnose", "--scenario", "cert-revocation-unreachable")
    assert proc.returncode == 1
    out = " ".join(proc.stdout.split())
    assert "broken: 1 finding(s); the connection fails at tls (error 0x904, extended 0x7)" in out
    assert "cert-revocation-unreachable on client" in out
    assert "fix disable-revocation-check (lowers security)" in out
    assert (
        "rdplab fix --lab-file labs/rdp-0x904.yaml --scenario cert-revocation-unreachable"
        " --fault cert-revocation-unreachable --fix disable-revocation-check"
        " --allow-lower-security" in out
    )


def test_sim_healthy_exits_0() -> None:
    proc = rdplab("diagnose", "--scenario", "healthy", "--json")
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["findings"] == [] and doc["fixes"] == []
    assert doc["connection"]["ok"] is True


# -- real machines (the loopback ones) ---------------------------------------------------------
@pytest.mark.winrm_loopback
def test_diagnose_changes_nothing(lab: WinRMLab) -> None:
    """Read-only: the facts before and after are equal, no journal is written, and the
    machines ran nothing but the agent check and one gather each."""
    scenario = LAB.scenario("listener-port-changed")
    place(lab, scenario)
    before = snapshots(lab)
    proc = rdplab("diagnose", "--inventory", str(lab.inventory), "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert {(f["fault"], f["role"]) for f in doc["findings"]} == scenario.expected()
    assert doc["provider"] == "inventory" and doc["scenario"] is None
    assert doc["connection"]["failed_stage"] == "tcp"
    assert "refused" in doc["connection"]["stages"][-1]["detail"]
    assert doc["fixes"][0]["command"] == (
        f"rdplab fix --inventory {lab.inventory} --fault listener-port-changed --fix restore-port"
    )
    assert snapshots(lab) == before
    assert not (lab.inventory.parent / ".rdplab-journal").exists()
    for role, r in lab.responders().items():
        assert r.kinds == {"hash": 1, "call": 1}, (role, r.kinds)  # one gather per machine


@pytest.mark.winrm_loopback
def test_diagnose_healthy_machines(lab: WinRMLab, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    proc = rdplab("diagnose", "--inventory", str(lab.inventory), "--html", str(page))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = " ".join(proc.stdout.split())
    assert "healthy: nothing is flagged and the connection gets through" in out
    assert f"probed at 127.0.0.1:{lab.rdp.port}" in out
    assert "not probed: licensing" in out
    assert "existing Windows machines from inventory.yaml" in page.read_text()


# -- errors: one line, exit 2, no traceback, no secret, nothing changed ----------------------------
@pytest.mark.winrm_loopback
def test_unreachable_host(lab: WinRMLab) -> None:
    text = lab.inventory.read_text().replace(f"port: {lab.host.port}", "port: 1")
    lab.inventory.write_text(text)
    line = one_error_line(rdplab("diagnose", "--inventory", str(lab.inventory)))
    assert line.startswith("error: 127.0.0.1: "), line
    assert "127.0.0.1:1" in line or "port 1" in line, line


@pytest.mark.winrm_loopback
def test_refused_credentials(lab: WinRMLab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RDPLAB_TEST_HOST_PW", "Wr0ng-Pa55-for-the-test!")
    proc = rdplab("diagnose", "--inventory", str(lab.inventory))
    line = one_error_line(proc)
    assert line.startswith("error: 127.0.0.1: authentication failed for user labadmin"), line
    assert "Wr0ng-Pa55" not in proc.stderr + proc.stdout


@pytest.mark.winrm_loopback
def test_unset_password_variable(lab: WinRMLab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RDPLAB_TEST_CLIENT_PW")
    line = one_error_line(rdplab("diagnose", "--inventory", str(lab.inventory)))
    assert line == (
        "error: 127.0.0.1 (client): the environment variable RDPLAB_TEST_CLIENT_PW is not set;"
        f" it holds the password ({lab.inventory}:7: machines.client.password_env)"
    )


@pytest.mark.winrm_loopback
def test_missing_agent_then_install_agent(lab: WinRMLab) -> None:
    lab.host.remove_agent()
    line = one_error_line(rdplab("diagnose", "--inventory", str(lab.inventory)))
    assert line.startswith("error: 127.0.0.1: the rdplab agent at "), line
    assert line.endswith(" is missing; rerun with --install-agent to copy it there"), line
    assert lab.host.agent_file() is None
    proc = rdplab("diagnose", "--inventory", str(lab.inventory), "--install-agent")
    assert proc.returncode == 0, proc.stderr
    assert lab.host.agent_file() is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("machines:\n  client: {}\n", ":2: machines.client.address: required"),
        ("machines: [\n", ":2: YAML syntax error"),
    ],
)
def test_bad_inventory_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    line = one_error_line(rdplab("diagnose", "--inventory", str(path)))
    assert line.startswith(f"error: {path}"), line
    assert expected in line, line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--inventory", "nope.yaml"], "error: nope.yaml: file not found"),
        (["--scenario", "cert-and-dsn"], "'cert-and-dsn' (did you mean 'cert-and-dns'?"),
        ([], "error: which machines? --inventory FILE (real machines) or --lab-file F"),
        (["--scenario", "healthy", "--port", "3390"], "error: --port: only with --inventory"),
    ],
)
def test_usage_errors(args: list[str], expected: str) -> None:
    line = one_error_line(rdplab("diagnose", *args))
    assert expected in line, line


@pytest.mark.ssh_loopback
@pytest.mark.parametrize("problem", ["unknown host key", "refused key"])
def test_ssh_errors(tmp_path: Path, problem: str) -> None:
    """Over SSH (paramiko to a real sshd): a host key that is not in known_hosts, and a
    key the server refuses, are one line naming the host, before anything runs."""
    from .ssh_server import ssh_server

    with ssh_server(tmp_path / "sshd") as host:
        known, key = host.known_hosts, host.client_key
        if problem == "unknown host key":
            known = tmp_path / "empty_known_hosts"
            known.write_text("")
        else:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ed25519

            key = tmp_path / "other_key"  # a key the server does not know
            key.write_bytes(
                ed25519.Ed25519PrivateKey.generate().private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.OpenSSH,
                    serialization.NoEncryption(),
                )
            )
            key.chmod(0o600)
        inventory = tmp_path / "inventory.yaml"
        entry = (
            f"    address: 127.0.0.1\n    transport: ssh\n    port: {host.port}\n"
            f"    username: {host.user}\n    key_file: {key}\n    known_hosts: {known}\n"
        )
        inventory.write_text(f"machines:\n  client:\n{entry}  host:\n{entry}")
        line = one_error_line(rdplab("diagnose", "--inventory", str(inventory)))
        expected = {
            "unknown host key": f"host key for [127.0.0.1]:{host.port} is not in {known}",
            "refused key": f"authentication failed for user {host.user} at 127.0.0.1:",
        }[problem]
        assert line.startswith(f"error: 127.0.0.1: {expected}"), line
        assert host.command_count == 0  # nothing ran
