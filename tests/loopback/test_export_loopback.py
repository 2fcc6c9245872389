"""Exported remediation scripts through the real transports (pywinrm against the loopback
WS-Management responder, paramiko against the loopback OpenSSH server).

No PowerShell runs here: the responder hands a script run to ``emulator.handle_script``,
which reads the op batch back out of the script it received and applies it to the twin
(``-WhatIf``: changes nothing). What is proven: the script that crossed the wire carries
exactly its fix's op batch, it went up in ONE command, ``-WhatIf`` and
``-AllowLowerSecurity`` were passed through, and a lab run with ``fix_via="script"`` (what
``--lab-fix-via=script`` selects) fixes every scenario within the call budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rdplab import catalog as cat
from rdplab import export as ex
from rdplab.agent import commands
from rdplab.backends.agent import AgentBackend
from rdplab.backends.base import CallLog
from rdplab.baselines import build_twin
from rdplab.catalog.base import ROLES
from rdplab.lab import load_lab
from rdplab.network import Network
from rdplab.ops import render_op
from rdplab.scenario import run_scenario

from .winrm_lab import LoopbackWinRMProvider, winrm_lab, winrm_to
from .wsman_responder import Responder, responder

pytestmark = pytest.mark.winrm_loopback
LAB_FILE = Path(__file__).resolve().parents[2] / "labs" / "rdp-0x904.yaml"
#: the Windows PowerShell scripts (a router's is a shell script: tests/netns/test_export_router.py)
EXPORTS = [e for e in ex.all_exports() if e.role != "router"]


@pytest.fixture(scope="module")
def machine() -> Iterator[tuple[Responder, AgentBackend]]:
    with responder(computer_name="HOST") as r:
        t = winrm_to(r)
        t.open()
        backend = AgentBackend("host", t, CallLog())
        try:
            yield r, backend
        finally:
            t.close()


def _fresh(r: Responder, baseline: str) -> None:
    r.twin = build_twin(baseline, "HOST")
    r.command_lines.clear()
    r.kinds.clear()


@pytest.mark.parametrize("export", EXPORTS, ids=[e.name for e in EXPORTS])
def test_exported_script_goes_up_in_one_command_with_exactly_its_batch(
    machine: tuple[Responder, AgentBackend], export: ex.Export
) -> None:
    r, backend = machine
    fault = cat.get(export.fault)
    _fresh(r, fault.baselines.get("host", "windows-server-2022"))
    text = ex.script(export)
    params = ("-AllowLowerSecurity",) if export.fix.risk == "lowers-security" else ()
    backend.run_script(text, params)
    assert r.kinds == {"script": 1}  # one command, nothing else on the wire
    assert commands.script_parameters(r.command_lines[0]) == params
    received = bytes(r.last_command.stdin).decode("utf-8-sig")  # type: ignore[union-attr]
    assert received == text
    fix = next(fx for p in fault.placements for fx in p.fixes if fx.id == export.fix.id)
    want = [render_op(o, ex.network_for(fault, Network()).context()) for o in fix.ops[export.role]]
    assert ex.read_batch(received) == want


def test_whatif_is_passed_through_and_changes_nothing(
    machine: tuple[Responder, AgentBackend],
) -> None:
    r, backend = machine
    _fresh(r, "windows-server-2022")
    r.twin.apply(list(cat.get("rdp-disabled").placement("host", "policy").breaks["host"]))
    before = r.twin.snapshot()
    export = ex.catalog_exports(cat.get("rdp-disabled"))[0]
    result = backend.run_script(ex.script(export), ("-WhatIf",))
    assert commands.script_parameters(r.command_lines[0]) == ("-WhatIf",)
    assert "-WhatIf" in (commands.decode(r.command_lines[0]) or "")
    assert result.results == [] and result.changes == 0
    assert r.twin.snapshot() == before
    # and without -WhatIf the same script fixes it, then a second run changes nothing
    assert backend.run_script(ex.script(export)).changes == 1  # the policy value goes
    assert backend.run_script(ex.script(export)).changes == 0


def test_lowers_security_script_refused_without_the_switch(
    machine: tuple[Responder, AgentBackend],
) -> None:
    r, backend = machine
    _fresh(r, "windows-11")
    export = ex.catalog_exports(cat.get("security-layer-mismatch"), "client-connect-anyway")[0]
    before = r.twin.snapshot()
    result = backend.run_script(ex.script(export))
    assert result.errors and "exit 2" in (result.errors[0].error or "")
    assert r.twin.snapshot() == before


@pytest.fixture(scope="module")
def lab_provider() -> Iterator[LoopbackWinRMProvider]:
    with winrm_lab() as provider:
        yield provider


@pytest.mark.parametrize(
    "scenario_id",
    [
        "rdp-disabled-policy",
        "credssp-oracle-mismatch-workaround",
        "cert-revocation-unreachable-workaround",
        "firewall-and-licensing",
        "port-and-cert-and-licensing",
    ],
)
def test_lab_fix_via_script(lab_provider: LoopbackWinRMProvider, scenario_id: str) -> None:
    """The fix phases run the exported scripts: every aspect holds, one command per machine
    per phase, and a machine with one catalog fix ran exactly what ``rdplab export``
    writes for the lab's network."""
    scenario = load_lab(LAB_FILE).scenario(scenario_id)
    run = run_scenario(lab_provider, scenario, fix_via="script")
    assert run.error is None, f"stopped at {run.failed_step}: {run.error}"
    assert run.findings_after == [] and run.connection_after and run.connection_after.ok
    assert all(b.changes == 0 for b in run.fix_again_results.values())
    assert run.unexpected_diff == {}
    assert (run.weakened != []) == scenario.allow_lowers_security
    assert run.max_calls_per_machine_phase == 1, run.calls
    for role in ROLES:
        kinds = lab_provider.responders[role].kinds
        fixed = role in run.fix_results
        assert kinds["script"] == (2 if fixed else 0), (role, kinds)  # fix and fix-again
        assert (role in run.fix_scripts) == fixed
    for role, name in run.fix_scripts.items():
        applied = [af for af in run.fixes if af.ops.get(role)]
        if len(applied) == 1:
            assert name == f"{applied[0].fault}--{applied[0].fix.id}.ps1"


def test_lab_file_script_fix_over_winrm(
    lab_provider: LoopbackWinRMProvider, tmp_path: Path
) -> None:
    """A lab file's ``fix: {script: ..., on: host}`` on a provider with PowerShell: the
    script goes up in one command per fix phase and every aspect holds. The script is an
    rdplab export (the only kind the loopback emulator can answer; no PowerShell here)."""
    export = ex.catalog_exports(cat.get("rdp-disabled"))[0]
    ex.write([export], tmp_path / "fixes")
    lab = tmp_path / "lab.yaml"
    lab.write_text(
        "machines:\n  client: {baseline: windows-11}\n  host: {baseline: windows-server-2022}\n"
        "scenarios:\n"
        "  - id: mine\n"
        "    faults: [{fault: rdp-disabled, variant: policy}]\n"
        f"    fix: {{script: fixes/{export.filename}, on: host}}\n"
    )
    scenario = load_lab(lab).scenario("mine")
    run = run_scenario(lab_provider, scenario)
    assert run.error is None and run.skipped is None, (run.failed_step, run.error, run.skipped)
    assert run.fix_results["host"].changes == 1 and run.findings_after == []
    assert run.connection_after is not None and run.connection_after.ok
    assert run.fix_again_results["host"].changes == 0
    assert run.unexpected_diff == {} and run.weakened == []
    assert run.max_calls_per_machine_phase == 1, run.calls
    assert lab_provider.responders["host"].kinds["script"] == 2  # fix and fix-again
    assert lab_provider.responders["client"].kinds["script"] == 0
