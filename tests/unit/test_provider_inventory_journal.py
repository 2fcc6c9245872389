"""inverse_ops: what the inventory provider's journal records to undo a batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rdplab.baselines import build_twin
from rdplab.catalog.base import ROLES
from rdplab.facts import Facts
from rdplab.lab import load_lab
from rdplab.ops import BatchResult, Op, OpResult, render_op
from rdplab.providers.inventory import inverse_ops

RD_RULE = "RemoteDesktop-UserMode-In-TCP"
REPO = Path(__file__).resolve().parents[2]


def baseline() -> Facts:
    twin = build_twin("windows-server-2022", "HOST")
    return Facts.parse("host", twin.gather({"ports": [3389]}))


def changed(*ops: Op, backup: str | None = None) -> BatchResult:
    return BatchResult([OpResult(o.name, True, "", backup) for o in ops])


def test_newest_first_and_only_what_changed() -> None:
    ops = [
        Op("reg.set", {"key": "HKLM\\X", "name": "a", "type": "REG_DWORD", "data": 1}),
        Op("reg.delete", {"key": "HKLM\\X", "name": "b"}),
        Op("svc.restart", {"name": "TermService"}),
    ]
    result = BatchResult(
        [
            OpResult("reg.set", True, "", "backup/1"),
            OpResult("reg.delete", False, "already absent"),
            OpResult("svc.restart", True, ""),
        ]
    )
    inverse, irreversible = inverse_ops(ops, result, baseline())
    assert inverse == [Op("reg.restore", {"backup": "backup/1"})]
    assert irreversible == []


def test_firewall_services_hosts_back_to_the_baseline() -> None:
    base = baseline()
    rule = base.fw_rules(name=RD_RULE)[0]
    ops = [
        Op("fw.rule.set", {"match": {"name": RD_RULE}, "enabled": False}),
        Op("fw.rule.add", {"rule": {"name": "rdplab-block", "action": "Block"}}),
        Op("fw.rule.remove", {"match": {"name": RD_RULE}}),
        Op("svc.stop", {"name": "TermService"}),
        Op("hosts.set", {"name": "host.rdplab.test", "address": "192.168.56.99"}),
        Op("dns.cache.seed", {"name": "host.rdplab.test", "address": "192.168.56.99"}),
    ]
    inverse, irreversible = inverse_ops(ops, changed(*ops), base)
    assert irreversible == []
    assert inverse == [
        Op("dns.flush", {"name": "host.rdplab.test", "expect": ""}),
        Op("hosts.remove", {"name": "host.rdplab.test"}),
        Op("svc.config", {"name": "TermService", "start_type": "Manual"}),
        Op("svc.start", {"name": "TermService"}),
        Op("fw.rule.add", {"rule": rule.to_json()}),
        Op("fw.rule.remove", {"match": {"name": "rdplab-block"}}),
        Op(
            "fw.rule.set",
            {"match": {"name": RD_RULE}, "enabled": rule.enabled, "action": rule.action},
        ),
    ]


def test_what_cannot_be_undone_is_named() -> None:
    ops = [
        Op("machinekeys.corrupt", {"store": "Remote Desktop"}),
        Op("hotfix.install", {"kb": "KB4103723"}),
        Op("cert.remove", {"store": "Remote Desktop", "which": "all"}),
        Op("cert.import", {"store": "My", "pfx": "...", "thumbprint": "AB" * 20}),
    ]
    inverse, irreversible = inverse_ops(ops, changed(*ops), baseline())
    assert inverse == [Op("cert.remove", {"store": "My", "which": "AB" * 20})]
    assert irreversible == [
        "cert.remove(store='Remote Desktop', which='all')",
        "hotfix.install(kb='KB4103723')",
        "machinekeys.corrupt(store='Remote Desktop')",
    ]


def test_without_a_baseline_only_registry_backups_are_undone() -> None:
    ops = [
        Op("reg.set", {"key": "HKLM\\X", "name": "a", "type": "REG_DWORD", "data": 1}),
        Op("fw.rule.set", {"match": {"name": RD_RULE}, "enabled": False}),
    ]
    result = BatchResult([OpResult("reg.set", True, "", "b/1"), OpResult("fw.rule.set", True)])
    inverse, irreversible = inverse_ops(ops, result, None)
    assert inverse == [Op("reg.restore", {"backup": "b/1"})]
    assert irreversible == [f"fw.rule.set(match={{'name': '{RD_RULE}'}}, enabled=False)"]


# -- the write-ahead inverse, planned from the facts before the batch runs ----------------------
def _placements() -> list[tuple[str, Any, Any]]:
    from rdplab import catalog as cat

    out = []
    for fault in cat.catalog().values():
        if fault.needs_router:  # the inventory provider drives Windows machines only
            continue
        for p in fault.placements:
            out.append((f"{fault.id}@{p.on}/{p.variant}", fault, p))
    return out


@pytest.mark.parametrize(
    ("label", "fault", "placement"), _placements(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_planned_inverse_of_every_break_and_fix(label: str, fault: Any, placement: Any) -> None:
    """Every break batch, and every fix batch after it, undone by the inverse planned from
    the facts gathered before it (no agent backup): the twin ends as it began, except for
    what the plan names as irreversible. Replaying the inverse twice changes nothing."""
    from rdplab.providers.journal import planned_inverse
    from rdplab.providers.sim import scenario_twin

    lab = load_lab(REPO / "labs" / "rdp-0x904.yaml")
    scenario = next(
        s
        for s in lab.scenarios
        if [(pf.fault.id, pf.placement) for pf in s.faults] == [(fault.id, placement)]
    )
    ctx = scenario.network.context()
    twins = {role: scenario_twin(scenario, role) for role in ROLES}
    batches = [placement.breaks, *(fx.ops for fx in placement.fixes if fx.risk == "safe")]
    for batch in batches:
        for role in ROLES:
            ops = [render_op(o, ctx) for o in batch.get(role, ())]
            if not ops:
                continue
            twin = twins[role]
            facts = Facts.parse(role, twin.gather({"ports": [3389]}))
            before = settings(twin.snapshot())
            inverse, irreversible = planned_inverse(ops, facts)
            assert not twin.apply(ops).errors
            result = twin.apply(inverse)
            assert not result.errors, (label, result.errors)
            if irreversible:
                continue  # named; the state cannot come back (a key, an update)
            assert settings(twin.snapshot()) == before, (label, role, ops)
            assert twin.apply(inverse).changes == 0, (label, role)


def settings(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The snapshot without empty registry keys and empty certificate stores: a planned
    inverse cannot remove a key above the trees the facts show (it cannot know whether it
    was there), and an emptied store is still a store."""
    out = dict(snapshot)
    out["registry"] = {k: v for k, v in snapshot["registry"].items() if v}
    certs = dict(snapshot["certificates"])
    certs["stores"] = {k: v for k, v in certs["stores"].items() if v}
    out["certificates"] = certs
    return out
