"""rdplab up / status / down / break, run as a user runs them (subprocesses), on an
inventory of loopback WinRM machines and on a Vagrant lab behind the fake vagrant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rdplab import windows as win

from .test_provider_inventory import (  # noqa: F401 - fixtures
    REPO,
    SECRET,
    WinRMLab,
    agent_ready,
    snapshots,
    winrm_lab,
)
from .test_provider_vagrant import FakeVagrant, fake_vagrant, vms  # noqa: F401
from .wsman_responder import Responder

TS = r"HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server"


def rdplab(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rdplab", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=os.environ.copy(),
    )


def deny(r: Responder) -> Any:
    value = r.twin.registry.get(TS, "fDenyTSConnections")
    return value.data if value is not None else None


@pytest.mark.winrm_loopback
def test_inventory_up_status_break_down(
    winrm_lab: WinRMLab,  # noqa: F811 - the fixture imported above
) -> None:
    inv = str(winrm_lab.inventory)
    up = rdplab("up", "--inventory", inv, "--json")
    assert up.returncode == 0, up.stderr
    for m in json.loads(up.stdout)["machines"].values():
        assert m["agent"].startswith(("agent current", "agent missing: installed")), m
    baseline = snapshots(winrm_lab)

    st = rdplab("status", "--inventory", inv, "--json")
    assert st.returncode == 0, st.stderr
    doc = json.loads(st.stdout)
    assert doc["ready"] is True
    assert doc["machines"]["host"]["journal_ops"] == 0
    assert doc["machines"]["host"]["machine"] == f"127.0.0.1:{winrm_lab.host.port} (winrm)"

    br = rdplab("break", "rdp-disabled", "--inventory", inv)
    assert br.returncode == 0, br.stderr
    assert "broke rdp-disabled@host" in br.stdout
    assert f"host (127.0.0.1:{winrm_lab.host.port} (winrm)): 1 change(s)" in br.stdout
    assert f"undo: rdplab down --inventory {inv}" in br.stdout
    assert deny(winrm_lab.host) == 1
    pending = json.loads(rdplab("status", "--inventory", inv, "--json").stdout)
    assert pending["machines"]["host"]["journal_ops"] > 0

    dn = rdplab("down", "--inventory", inv)
    assert dn.returncode == 0, dn.stderr
    assert "rolling back the journal" in dn.stderr  # progress on stderr
    assert deny(winrm_lab.host) == 0
    assert snapshots(winrm_lab) == baseline
    for out in (up, st, br, dn):
        assert SECRET not in out.stdout + out.stderr


@pytest.mark.winrm_loopback
def test_break_with_role_and_variant(
    winrm_lab: WinRMLab,  # noqa: F811
) -> None:
    inv = str(winrm_lab.inventory)
    br = rdplab(
        "break", "firewall-blocked", "--on", "host", "--variant", "block-rule", "--inventory", inv
    )
    assert br.returncode == 0, br.stderr
    assert "broke firewall-blocked@host/block-rule" in br.stdout

    def blocks() -> list[str]:
        return [r.name for r in winrm_lab.host.twin.firewall.rules if r.action == "Block"]

    assert blocks(), "no block rule"
    assert rdplab("down", "--inventory", inv).returncode == 0
    assert blocks() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["break", "rdp-disabld"], "did you mean 'rdp-disabled'?"),
        (["break", "dns-stale-record", "--on", "host"], "cannot be put on host (roles: client)"),
        (["break", "rdp-disabled", "--variant", "nope"], "has no variant 'nope'"),
        (["status", "--inventory", "missing.yaml"], "missing.yaml"),
        (["up", "--root", "/nonexistent"], "no Vagrantfile in /nonexistent"),
    ],
)
def test_lifecycle_errors_are_one_line(args: list[str], message: str) -> None:
    proc = rdplab(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr


@pytest.mark.winrm_loopback
def test_unset_password_is_one_line(
    winrm_lab: WinRMLab,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RDPLAB_TEST_HOST_PW")
    proc = rdplab("up", "--inventory", str(winrm_lab.inventory))
    assert proc.returncode == 2
    assert "the environment variable RDPLAB_TEST_HOST_PW is not set" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    st = rdplab("status", "--inventory", str(winrm_lab.inventory), "--json")
    assert st.returncode == 1  # not ready, and says why
    host = json.loads(st.stdout)["machines"]["host"]
    assert "RDPLAB_TEST_HOST_PW is not set" in host["credentials"] and not host["ready"]


@pytest.mark.winrm_loopback
def test_vagrant_up_status_down(
    fake_vagrant: FakeVagrant,  # noqa: F811
    vms: dict[str, Responder],  # noqa: F811
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    up = rdplab("up", cwd=project)
    assert up.returncode == 0, up.stderr
    # progress of the long work, streamed on stderr
    assert "rdplab: vagrant up client (the first time this takes a while)" in up.stderr
    assert "Machine booted and ready!" in up.stderr
    assert "rdplab: vagrant snapshot save host baseline" in up.stderr
    st = rdplab("status", "--json", cwd=project)
    assert st.returncode == 0, st.stderr
    doc = json.loads(st.stdout)
    assert doc["ready"] is True
    assert doc["machines"]["host"] == {
        "machine": "vagrant machine host",
        "state": "running",
        "baseline_snapshot": True,
        "ready": True,
    }
    fake_vagrant.clear()
    lab_file = str(REPO / "labs" / "rdp-0x904.yaml")
    br = rdplab("break", "termservice-stopped", "--lab-file", lab_file, cwd=project)
    assert br.returncode == 0, br.stderr
    assert ["snapshot", "restore", "host", "baseline", "--no-provision"] in fake_vagrant.calls()
    assert vms["host"].twin.services.get(win.TERMSERVICE).status == "Stopped"
    dn = rdplab("down", cwd=project)
    assert dn.returncode == 0, dn.stderr
    assert ["halt", "client"] in fake_vagrant.calls() and ["halt", "host"] in fake_vagrant.calls()
    assert json.loads(rdplab("status", "--json", cwd=project).stdout)["ready"] is False


def test_vagrant_without_hypervisor_is_one_line(
    fake_vagrant: FakeVagrant,  # noqa: F811
    tmp_path: Path,
) -> None:
    fake_vagrant.knob("no_provider")
    for command in ("up", "status", "down"):
        proc = rdplab(command, cwd=tmp_path / "project")
        assert proc.returncode == 2, (command, proc.stderr)
        assert "vagrant found no usable hypervisor provider" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
