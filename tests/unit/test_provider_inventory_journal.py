"""inverse_ops: what the inventory provider's journal records to undo a batch."""

from __future__ import annotations

from rdplab.baselines import build_twin
from rdplab.facts import Facts
from rdplab.ops import BatchResult, Op, OpResult
from rdplab.providers.inventory import inverse_ops

RD_RULE = "RemoteDesktop-UserMode-In-TCP"


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
