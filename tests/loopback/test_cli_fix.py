"""``rdplab fix`` and ``rdplab rollback`` on the loopback machines (pywinrm with NTLM to
two WS-Management responders, the live probe against the RDP listener that follows the
host twin; paramiko to a real sshd for the SSH test).

The matrix: for every scenario of labs/rdp-0x904.yaml, its faults are put on the
machines by hand (fresh twins, its break ops), then ``diagnose`` finds exactly those
faults on the right machines, ``fix`` repairs them, ``diagnose`` again is clean and
``rollback`` returns the facts to what they were before the fix (where the fix replaced
something that cannot come back, rollback names it and the difference is only that).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rdplab.lab import Scenario
from rdplab.ops import render
from rdplab.scenario import allowed, diff

from .test_cli_diagnose import LAB, LAB_FILE, lab, one_error_line, place, rdplab
from .test_provider_inventory import SECRET, WinRMLab, make_winrm_lab, snapshots

__all__ = ["lab"]  # the fixture, shared with test_cli_diagnose
HERE = Path(__file__).resolve().parent


class Session:
    """rdplab commands in one helper process (tests/loopback/rdplab_session.py)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "rdplab_session.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self, *args: str) -> tuple[int, Any, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(list(args)) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert "Traceback" not in answer["stderr"], answer["stderr"]
        assert SECRET not in answer["stdout"] + answer["stderr"]
        doc = json.loads(answer["stdout"]) if answer["stdout"].startswith("{") else None
        return answer["rc"], doc, answer["stderr"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def fix_args(scenario: Scenario) -> list[str]:
    """A scenario that opts in to lowering security names its workaround fixes."""
    if not scenario.allow_lowers_security:
        return []
    names = [pf.placement.fix(True).id for pf in scenario.faults]
    return [a for n in names for a in ("--fix", n)] + ["--allow-lower-security"]


def found(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["fault"], f["role"]) for f in doc["findings"]}


HALVES = {
    0: [s.id for s in LAB.scenarios[0::2]],
    1: [s.id for s in LAB.scenarios[1::2]],
}


@pytest.mark.winrm_loopback
@pytest.mark.parametrize("half", sorted(HALVES))
def test_every_scenario_diagnose_fix_diagnose_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, half: int
) -> None:
    timings: dict[str, float] = {}
    with make_winrm_lab(tmp_path, monkeypatch) as made:
        for r in made.responders().values():
            r.install_agent()
        inv = ["--inventory", str(made.inventory)]
        session = Session()
        try:
            for sid in HALVES[half]:
                start = time.monotonic()
                _one_scenario(made, session, inv, LAB.scenario(sid))
                timings[sid] = round(time.monotonic() - start, 2)
        finally:
            session.close()
    print(f"seconds per scenario (diagnose, fix, diagnose, rollback): {timings}")


def _one_scenario(made: WinRMLab, rdplab_in: Session, inv: list[str], sc: Scenario) -> None:
    place(made, sc)
    before_fix = snapshots(made)
    journal = made.inventory.parent / ".rdplab-journal"

    rc, doc, err = rdplab_in("diagnose", *inv, "--json")
    assert rc == (0 if sc.healthy else 1), (sc.id, rc, err)
    assert found(doc) == sc.expected(), sc.id
    assert snapshots(made) == before_fix, f"{sc.id}: diagnose changed something"

    rc, doc, err = rdplab_in("fix", *inv, "--yes", "--json", *fix_args(sc))
    assert rc == 0, (sc.id, rc, err, doc and doc["after"])
    assert found(doc["before"]) == sc.expected(), sc.id
    if sc.healthy:
        assert doc["planned"] == [] and doc["after"] is None  # nothing to fix, nothing done
    else:
        assert doc["after"]["findings"] == [] and doc["after"]["connection"]["ok"], sc.id
    assert {(a["fault"], a["role"]) for a in doc["applied"]} == sc.expected(), sc.id

    rc, doc, err = rdplab_in("diagnose", *inv, "--json")
    assert (rc, doc["findings"]) == (0, []), (sc.id, rc, err, doc["findings"])
    assert doc["connection"]["ok"], (sc.id, doc["connection"])

    rc, doc, err = rdplab_in("rollback", *inv, "--json")
    assert rc == 0, (sc.id, err)
    after_rollback = snapshots(made)
    if sc.healthy:
        assert doc["fix"] is None and after_rollback == before_fix
        return
    assert doc["fix"] and doc["finished"] is True and doc["fixes_left"] == 0, doc
    if not doc["cannot_undo"]:
        assert after_rollback == before_fix, f"{sc.id}: rollback did not restore"
    else:
        # what could not come back is named, and it is all that differs
        ctx = sc.network.context()
        leaves = [
            render(p, ctx) for pf in sc.faults for fx in pf.placement.fixes for p in fx.leaves
        ]
        for role in ("client", "host"):
            left = [
                path
                for path, _, _ in diff(before_fix[role], after_rollback[role])
                if not allowed(f"{role}:{path}", leaves)
            ]
            assert left == [], (sc.id, role, left, doc["cannot_undo"])
    for path in journal.glob("*.jsonl"):
        assert path.read_text() == "", f"{sc.id}: {path.name} not emptied by rollback"


# -- the commands one by one, as separate processes --------------------------------------
@pytest.mark.winrm_loopback
def test_fix_confirmation_dry_run_and_interrupted_fix(lab: WinRMLab) -> None:
    sc = LAB.scenario("firewall-and-licensing")
    place(lab, sc)
    broken = snapshots(lab)
    inv = ["--inventory", str(lab.inventory)]
    journal = lab.inventory.parent / ".rdplab-journal"

    proc = rdplab("fix", *inv, "--dry-run")
    assert proc.returncode == 1, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "Would apply" in text and "host: fw.rule.set(match={'group': 'Remote Desktop'}" in text
    assert snapshots(lab) == broken and not journal.exists()

    proc = subprocess.run(
        [sys.executable, "-m", "rdplab", "fix", *inv],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1 and "Apply 3 op(s)? [y/N]" in proc.stderr, proc.stderr
    assert "error: not confirmed: nothing was changed" in proc.stderr
    assert snapshots(lab) == broken and not list(journal.glob("*.jsonl"))

    proc = rdplab("fix", *inv, "--fault", "licensing-cache-stale", "--yes")
    assert proc.returncode == 1, proc.stderr  # the firewall finding remains
    text = " ".join(proc.stdout.split())
    assert "clear-mslicensing (safe) for licensing-cache-stale on client" in text
    assert f"Undo it with: rdplab rollback --inventory {lab.inventory}" in text
    fixed = snapshots(lab)
    assert fixed["host"] == broken["host"] and fixed["client"] != broken["client"]

    tag = json.loads(next(iter(journal.glob("*.jsonl"))).read_text().splitlines()[0])["fix"]

    # a fix whose process dies after its batch ran on the host, before the answer came:
    # the write-ahead entry, with the inverse planned from the facts, is all there is
    ran, release = threading.Event(), threading.Event()
    original = lab.host.execute

    def hang_after_batch(line: str, stdin: bytes) -> tuple[int, bytes, bytes]:
        answer = original(line, stdin)
        if b'"ops"' in stdin:
            ran.set()
            release.wait(60)
        return answer

    lab.host.execute = hang_after_batch  # type: ignore[method-assign]
    cut = subprocess.Popen(
        [sys.executable, "-m", "rdplab", "fix", *inv, "--fault", "firewall-blocked", "--yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert ran.wait(120), "the fix never sent its batch"
        cut.kill()
        cut.wait(30)
    finally:
        release.set()
        lab.host.execute = original  # type: ignore[method-assign]
    host_journal = journal / f"127.0.0.1_{lab.host.port}.jsonl"
    (pending,) = [json.loads(x) for x in host_journal.read_text().splitlines()]
    assert pending["pending"] is True and pending["fix"] != tag and pending["inverse"]
    repaired = snapshots(lab)
    assert repaired["host"] != broken["host"]  # the batch did run

    proc = rdplab("diagnose", *inv)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: a fix was cut short ({pending['fix']})" in " ".join(proc.stderr.split())
    assert snapshots(lab) == repaired  # diagnose only warns

    proc = rdplab("fix", *inv, "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["recovered"][0].startswith(f"an interrupted fix ({pending['fix']}) was rolled")
    # the planned inverse put the firewall back as it was before the cut fix
    assert found(doc["before"]) == {("firewall-blocked", "host")}
    assert doc["after"]["ok"]

    # rollback undoes the last fix, then the one before
    proc = rdplab("rollback", *inv, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["fixes_left"] == 1
    proc = rdplab("rollback", *inv)
    assert proc.returncode == 0 and f"rolled back fix {tag}" in proc.stdout
    assert snapshots(lab) == broken
    proc = rdplab("rollback", *inv)
    assert proc.returncode == 0 and "nothing to roll back" in proc.stderr


@pytest.mark.winrm_loopback
def test_lowers_security_needs_the_flag(lab: WinRMLab) -> None:
    place(lab, LAB.scenario("cert-revocation-unreachable"))
    broken = snapshots(lab)
    inv = ["--inventory", str(lab.inventory)]
    line = one_error_line(rdplab("fix", *inv, "--fix", "disable-revocation-check", "--yes"))
    assert line.startswith("error: fix disable-revocation-check (cert-revocation-unreachable on")
    assert line.endswith("Add --allow-lower-security to apply it.")
    assert snapshots(lab) == broken
    proc = rdplab("fix", *inv, "--yes", "--json")  # the safe fix by default
    doc = json.loads(proc.stdout)
    assert [a["fix"] for a in doc["applied"]] == ["make-crl-reachable"], doc["applied"]
    assert [w["fix"] for w in doc["withheld"]] == ["disable-revocation-check"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--fault", "firewal-blocked"], "unknown fault id 'firewal-blocked' (did you mean"),
        (["--fix", "enable-rd-rule"], "unknown fix id 'enable-rd-rule' (did you mean"),
    ],
)
def test_unknown_ids(args: list[str], expected: str) -> None:
    line = one_error_line(
        rdplab("fix", "--lab-file", str(LAB_FILE), "--scenario", "healthy", *args)
    )
    assert expected in line, line


def test_rollback_needs_an_inventory() -> None:
    line = one_error_line(rdplab("rollback"))
    assert "rollback works on real machines: --inventory FILE" in line


@pytest.mark.ssh_loopback
def test_fix_and_rollback_over_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host reached by paramiko (key, strict known_hosts), the client by pywinrm."""
    from rdplab.baselines import build_twin
    from rdplab.network import Network

    from .ssh_server import ssh_server
    from .test_provider_inventory import machine_yaml, wire
    from .wsman_responder import responder

    net = Network()
    with (
        responder(baseline="windows-11", computer_name="CLIENT") as client,
        ssh_server(tmp_path / "sshd") as host,
    ):
        wire(client.twin, net)
        client.install_agent()
        twin = build_twin("windows-server-2022", "HOST")
        twin.zone = net.zone
        twin.http_reach = frozenset({net.pki_address}).__contains__
        sc = LAB.scenario("rdp-disabled-policy")
        from rdplab.scenario import break_plan

        assert not twin.apply(break_plan(sc)["host"]).errors
        host.set_twin(twin)
        host.install_agent()  # as a first --install-agent run leaves it (tested over WinRM)
        broken = host.twin().snapshot()
        monkeypatch.setenv("RDPLAB_TEST_CLIENT_PW", client.password)
        inventory = tmp_path / "inventory.yaml"
        inventory.write_text(
            "machines:\n  client:\n"
            + machine_yaml(client, "RDPLAB_TEST_CLIENT_PW")
            + "  host:\n    address: 127.0.0.1\n    transport: ssh\n"
            f"    port: {host.port}\n    username: {host.user}\n"
            f"    key_file: {host.client_key}\n    known_hosts: {host.known_hosts}\n"
            "    rdp_port: 1\n"
            "probe_timeout: 1\n"
        )
        inv = ["--inventory", str(inventory)]
        proc = rdplab("diagnose", *inv, "--json")
        assert proc.returncode == 1, proc.stderr
        assert found(json.loads(proc.stdout)) == {("rdp-disabled", "host")}
        proc = rdplab("fix", *inv, "--yes", "--json")
        doc = json.loads(proc.stdout)
        assert doc["after"]["findings"] == [] and doc["before"]["findings"], proc.stderr
        assert host.twin().snapshot() != broken
        proc = rdplab("rollback", "--inventory", str(inventory), "--json")
        assert proc.returncode == 0, proc.stderr
        assert host.twin().snapshot() == broken


@pytest.mark.winrm_loopback
def test_round_trips_per_command(lab: WinRMLab) -> None:
    """Counted on the wire: fix is the agent check, the diagnosis gather, one batch and the
    verify gather per machine it changes; rollback touches only the machine it undoes,
    with one batch."""
    place(lab, LAB.scenario("listener-port-changed"))
    inv = ["--inventory", str(lab.inventory)]
    for r in lab.responders().values():
        r.reset_counters()
    assert rdplab("fix", *inv, "--yes").returncode == 0
    assert lab.host.kinds == {"hash": 1, "call": 3}, lab.host.kinds
    assert lab.client.kinds == {"hash": 1, "call": 2}, lab.client.kinds
    for r in lab.responders().values():
        r.reset_counters()
    assert rdplab("rollback", *inv).returncode == 0
    assert lab.host.kinds == {"hash": 1, "call": 1} and lab.client.kinds == {}
