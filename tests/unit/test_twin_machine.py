"""The composed twin: batches with rollback, backups, the whole op vocabulary, gather()."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rdplab import mslicensing
from rdplab import windows as win
from rdplab.baselines import build_twin
from rdplab.errors import BackendError, OpError
from rdplab.facts import Facts
from rdplab.network import Network
from rdplab.ops import VOCABULARY, Op, validate_op
from rdplab.twin import Twin
from rdplab.twin.certs import RD_STORE

NET = Network()

# Valid arguments for every op of the vocabulary, on a fresh windows-server-2022 twin.
VALID_ARGS: dict[str, dict[str, Any]] = {
    "reg.set": {"key": win.RDP_TCP_KEY, "name": "PortNumber", "type": "REG_DWORD", "data": 3390},
    "reg.delete": {"key": win.RDP_TCP_KEY, "name": "MinEncryptionLevel"},
    "reg.restore": {"backup": "twin://HOST/backup/1"},
    "fw.rule.add": {"rule": {"name": "t-block", "action": "Block", "local_port": "3389"}},
    "fw.rule.set": {"match": {"group": win.RD_GROUP}, "enabled": False},
    "fw.rule.remove": {"match": {"name": "WINRM-HTTP-In-TCP"}},
    "svc.start": {"name": "TermService"},
    "svc.stop": {"name": "TermService"},
    "svc.restart": {"name": "TermService"},
    "svc.config": {"name": "TermService", "start_type": "Disabled"},
    "cert.import": {
        "store": "My",
        "pfx": NET.issued.pfx_b64,
        "thumbprint": NET.issued.thumbprint,
        "password": NET.issued.pfx_password,
    },
    "cert.remove": {"store": RD_STORE, "which": "all"},
    "machinekeys.corrupt": {"store": RD_STORE},
    "dns.flush": {"name": NET.host_name, "expect": NET.host_address},
    "dns.cache.seed": {"name": NET.host_name, "address": NET.stale_address},
    "hosts.set": {"name": NET.host_name, "address": NET.stale_address},
    "hosts.remove": {"name": NET.host_name},
    "hotfix.install": {"kb": "KB4103723"},
    "licensing.clear": {},
    "ip.static": {"alias": "Ethernet", "address": NET.host_address, "prefix": 24},
    "ip.dhcp.lease": {"alias": "Ethernet", "address": NET.stale_address},
}
# On a fresh, healthy 2022 machine these ops have nothing to do (first run: no change).
NO_CHANGE_ON_FRESH = {"svc.start", "dns.flush", "hosts.remove", "licensing.clear"}
# ... and these legitimately fail there, with the message fragment they must give.
ERRORS_ON_FRESH = {
    "hotfix.install": "does not apply to build 10.0.20348",
    "reg.restore": "no backup 'twin://HOST/backup/1' on HOST",
    # a baseline twin has no network interface (providers.sim.scenario_twin gives it one)
    "ip.static": "no IPv4 interface named 'Ethernet'",
    "ip.dhcp.lease": "no IPv4 interface named 'Ethernet'",
}
# Not idempotent by design (restarts whenever asked, unless if_changed).
ALWAYS_CHANGES = {"svc.restart"}


@pytest.fixture
def fresh() -> Twin:
    return build_twin("windows-server-2022", "HOST")


def test_every_vocabulary_op_has_a_test_case() -> None:
    assert set(VALID_ARGS) == set(VOCABULARY)
    for name, args in VALID_ARGS.items():
        validate_op(Op(name, args))


@pytest.mark.parametrize("name", sorted(VOCABULARY))
def test_every_vocabulary_op_is_implemented(name: str) -> None:
    twin = build_twin("windows-server-2022", "HOST")
    before = twin.snapshot()
    result = twin.apply([Op(name, VALID_ARGS[name])])
    (r,) = result.results
    assert r.op == name
    if name in ERRORS_ON_FRESH:
        assert r.error is not None and ERRORS_ON_FRESH[name] in r.error
        assert name in r.error
        assert not r.changed
        assert twin.snapshot() == before
        return
    assert r.error is None, r.error
    assert "not implemented" not in r.detail
    assert r.changed is (name not in NO_CHANGE_ON_FRESH)
    if name not in NO_CHANGE_ON_FRESH and name not in {"svc.restart", "dns.cache.seed"}:
        # every changing op leaves a trace in the persistent state
        # (restart leaves the service running; the DNS cache is volatile)
        assert twin.snapshot() != before
    again = twin.apply([Op(name, VALID_ARGS[name])]).results[0]
    assert again.error is None
    assert again.changed is (name in ALWAYS_CHANGES), f"{name} is not idempotent"


def test_hotfix_install_on_the_unpatched_2016_host() -> None:
    twin = build_twin("windows-server-2016-1607", "OLD")
    assert not win.credssp_patched(twin.tspkg_version)
    r = twin.apply([Op("hotfix.install", {"kb": "KB4103723"})]).results[0]
    assert r.changed and r.error is None
    assert twin.hotfixes == ["KB4103723"]
    assert twin.tspkg_version == "10.0.14393.2248" == twin.computer.os_build
    assert win.credssp_patched(twin.tspkg_version)
    assert twin.apply([Op("hotfix.install", {"kb": "KB4103723"})]).results[0].changed is False


def test_hotfix_install_unknown_kb_errors(fresh: Twin) -> None:
    r = fresh.apply([Op("hotfix.install", {"kb": "KB0000000"})]).results[0]
    assert r.error is not None and "KB0000000" in r.error


# -- batches and rollback -------------------------------------------------------------------
def test_failing_op_rolls_back_the_whole_machine(fresh: Twin) -> None:
    fresh.dns.cache["warm.lab"] = "10.1.1.1"
    snap, gathered = fresh.snapshot(), copy.deepcopy(fresh.gather())
    ops = [
        Op(
            "reg.set",
            {"key": win.TS_KEY, "name": "fDenyTSConnections", "type": "REG_DWORD", "data": 1},
        ),
        Op("fw.rule.set", {"match": {"group": win.RD_GROUP}, "enabled": False}),
        Op("hosts.set", {"name": "x.lab", "address": "10.0.0.1"}),
        Op("dns.cache.seed", {"name": "y.lab", "address": "10.0.0.2"}),
        Op("cert.remove", {"store": RD_STORE, "which": "all"}),
        Op("svc.config", {"name": "TermService", "start_type": "Disabled"}),
        Op("svc.stop", {"name": "TermService"}),
        Op("svc.start", {"name": "TermService"}),  # disabled: fails
        Op("hosts.set", {"name": "never.lab", "address": "10.0.0.3"}),
    ]
    result = fresh.apply(ops)

    assert fresh.snapshot() == snap
    assert fresh.gather() == gathered  # volatile state (DNS cache) too
    assert fresh.dns.cache == {"warm.lab": "10.1.1.1"}
    assert len(result.results) == 8  # nothing after the failing op ran
    *done, failed = result.results
    assert failed.op == "svc.start" and failed.error and "disabled" in failed.error
    assert failed.detail == "rolled back the batch"
    assert all(r.changed is False and r.detail.endswith("(rolled back)") for r in done)
    assert result.changes == 0
    assert result.errors == [failed]


def test_rollback_restores_a_replaced_firewall_rule_object(fresh: Twin) -> None:
    before = fresh.snapshot()
    result = fresh.apply(
        [
            Op(
                "fw.rule.add",
                {"rule": {"name": "RemoteDesktop-UserMode-In-TCP", "local_port": "1"}},
            ),
            Op("fw.rule.set", {"match": {"name": "WINRM-HTTP-In-TCP"}, "action": "Deny"}),
        ]
    )
    assert result.errors
    assert fresh.snapshot() == before
    assert fresh.firewall.evaluate("In", "TCP", 3389, win.TS_PROGRAM).allowed


def test_invalid_op_rejects_the_batch_before_anything_runs(fresh: Twin) -> None:
    before = fresh.snapshot()
    with pytest.raises(OpError, match="unknown op"):
        fresh.apply([Op("svc.stop", {"name": "TermService"}), Op("reboot", {})])
    assert fresh.snapshot() == before


def test_if_changed_restart(fresh: Twin) -> None:
    r = fresh.apply([Op("svc.restart", {"name": "TermService", "if_changed": True})])
    assert r.results[0].changed is False and "no restart" in r.results[0].detail
    r = fresh.apply(
        [
            Op(
                "reg.set",
                {"key": win.RDP_TCP_KEY, "name": "PortNumber", "type": "REG_DWORD", "data": 3390},
            ),
            Op("svc.restart", {"name": "TermService", "if_changed": True}),
        ]
    )
    assert [x.changed for x in r.results] == [True, True]
    assert 3390 in fresh.listening()


# -- backups --------------------------------------------------------------------------------
def test_reg_set_backs_up_the_value_first(fresh: Twin) -> None:
    r = fresh.apply(
        [
            Op(
                "reg.set",
                {"key": win.RDP_TCP_KEY, "name": "PortNumber", "type": "REG_DWORD", "data": 3390},
            )
        ]
    ).results[0]
    assert r.backup == "twin://HOST/backup/1"
    assert "3389 -> 3390" in r.detail
    assert fresh.journal == [
        {
            "key": win.RDP_TCP_KEY,
            "name": "PortNumber",
            "value": {"type": "REG_DWORD", "data": 3389},
            "absent_from": None,
        }
    ]
    # an op that changes nothing takes no backup
    r = fresh.apply(
        [
            Op(
                "reg.set",
                {"key": win.RDP_TCP_KEY, "name": "PortNumber", "type": "REG_DWORD", "data": 3390},
            )
        ]
    ).results[0]
    assert r.backup is None and len(fresh.journal) == 1
    # the backup restores the old state
    fresh._restore(fresh.journal[0])
    assert fresh.lookup(win.RDP_TCP_KEY, "PortNumber") == 3389


def test_reg_restore_puts_a_backup_back(fresh: Twin) -> None:
    before = fresh.snapshot()
    r = fresh.apply(
        [
            Op(
                "reg.set",
                {"key": win.RDP_TCP_KEY, "name": "PortNumber", "type": "REG_DWORD", "data": 1},
            ),
            Op("reg.delete", {"key": win.TS_KEY}),
        ]
    ).results
    assert [x.backup for x in r] == ["twin://HOST/backup/1", "twin://HOST/backup/2"]
    assert fresh.registry.key(win.RDP_TCP_KEY) is None
    # the tree backup restores the whole Terminal Server tree, as it was before the delete
    r2 = fresh.apply([Op("reg.restore", {"backup": "twin://HOST/backup/2"})]).results[0]
    assert r2.changed and r2.error is None
    assert fresh.lookup(win.RDP_TCP_KEY, "PortNumber") == 1
    assert (
        fresh.apply([Op("reg.restore", {"backup": "twin://HOST/backup/2"})]).results[0].changed
        is False
    )
    fresh.apply([Op("reg.restore", {"backup": "twin://HOST/backup/1"})])
    assert fresh.snapshot() == before


@pytest.mark.parametrize(
    "backup",
    ["twin://OTHER/backup/1", "twin://HOST/backup/0", "twin://HOST/backup/2", "backup/1", ""],
)
def test_reg_restore_rejects_unknown_backups(fresh: Twin, backup: str) -> None:
    fresh.apply([Op("reg.set", {"key": win.TS_KEY, "name": "x", "type": "REG_DWORD", "data": 1})])
    r = fresh.apply([Op("reg.restore", {"backup": backup})]).results[0]
    assert r.error is not None and "no backup" in r.error


def test_reg_delete_key_backs_up_the_whole_tree(client: Twin) -> None:
    tree = client.registry.export(win.MSLICENSING_KEY)
    assert len(tree) >= 3  # root, HardwareID, Store, Store\LICENSE000
    r = client.apply([Op("reg.delete", {"key": win.MSLICENSING_KEY})]).results[0]
    assert r.changed and r.backup == "twin://CLIENT/backup/1"
    assert client.journal[-1]["export"] == tree
    assert client.registry.key(win.MSLICENSING_KEY + r"\Store") is None
    r = client.apply([Op("reg.delete", {"key": win.MSLICENSING_KEY})]).results[0]
    assert not r.changed and r.backup is None and "already absent" in r.detail


def test_reg_delete_value_only(fresh: Twin) -> None:
    r = fresh.apply(
        [Op("reg.delete", {"key": win.TS_KEY, "name": "fSingleSessionPerUser"})]
    ).results[0]
    assert r.changed and r.backup
    assert fresh.registry.key(win.TS_KEY) is not None
    assert fresh.lookup(win.TS_KEY, "fDenyTSConnections") == 0
    assert fresh.lookup(win.TS_KEY, "fSingleSessionPerUser") is None


def test_licensing_clear_backs_up_and_deletes_only_when_corrupt(client: Twin) -> None:
    assert client.apply([Op("licensing.clear")]).results[0].changed is False
    client.apply(
        [
            Op(
                "reg.set",
                {
                    "key": win.MSLICENSING_KEY + r"\HardwareID",
                    "name": "ClientHWID",
                    "type": "REG_BINARY",
                    "data": "00",
                },
            )
        ]
    )
    r = client.apply([Op("licensing.clear")]).results[0]
    assert r.changed and r.backup and "20" in r.detail
    assert client.journal[-1]["key"] == win.MSLICENSING_KEY
    assert client.registry.key(win.MSLICENSING_KEY) is None


def test_reg_set_binary_is_idempotent_for_upper_case_hex(fresh: Twin) -> None:
    op = Op(
        "reg.set",
        {
            "key": win.RDP_TCP_KEY,
            "name": "SSLCertificateSHA1Hash",
            "type": "REG_BINARY",
            "data": "ABCDEF",
        },
    )
    assert fresh.apply([op]).results[0].changed is True
    again = fresh.apply([op]).results[0]
    assert again.changed is False
    assert len(fresh.journal) == 1


# -- validate_op ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "message"),
    [
        (Op("reg.sett", {}), "unknown op 'reg.sett'"),
        (Op("svc.start", {}), "missing argument 'name'"),
        (Op("svc.start", {"name": 5}), "argument 'name' has type int"),
        (Op("svc.start", {"name": "x", "force": True}), "unexpected argument 'force'"),
        (Op("reg.set", {"key": "k", "name": "n", "type": "REG_DWORD", "data": True}), "boolean"),
        (Op("reg.set", {"key": "k", "name": "n", "type": "DWORD", "data": 1}), "not one of"),
        (
            Op("reg.set", {"key": "k", "name": "n", "type": "REG_DWORD", "data": 1.5}),
            "has type float",
        ),
        (Op("fw.rule.set", {"match": {"name": "x"}, "enabled": 1}), "has type int"),
        (Op("fw.rule.add", {"rule": [{"name": "x"}]}), "has type list"),
        (Op("licensing.clear", {"key": "x"}), "unexpected argument"),
    ],
)
def test_validate_op_errors(op: Op, message: str) -> None:
    with pytest.raises(OpError, match=message.replace(".", r"\.")):
        validate_op(op)


def test_validate_op_optional_args() -> None:
    validate_op(Op("reg.delete", {"key": "k"}))
    validate_op(Op("svc.restart", {"name": "x", "if_changed": False}))
    validate_op(Op("fw.rule.set", {"match": {"name": "x"}}))


@pytest.mark.parametrize(
    "op",
    [
        Op("reg.set", {"key": r"HKCR\x", "name": "n", "type": "REG_DWORD", "data": 1}),
        Op("reg.set", {"key": win.TS_KEY, "name": "n", "type": "REG_DWORD", "data": -1}),
        Op("fw.rule.add", {"rule": {"name": "x", "direction": "Both"}}),
        Op("fw.rule.remove", {"match": {}}),
        Op("svc.config", {"name": "TermService", "start_type": "Boot"}),
        Op("svc.stop", {"name": "NoSuchService"}),
        Op("cert.import", {"store": "My", "pfx": "!!", "thumbprint": "00"}),
    ],
    ids=lambda o: o.name,
)
def test_ops_failing_on_the_machine_report_an_error_and_change_nothing(fresh: Twin, op: Op) -> None:
    before = fresh.snapshot()
    r = fresh.apply([op]).results[0]
    assert r.error and not r.changed
    assert fresh.snapshot() == before


# -- gather ---------------------------------------------------------------------------------
def test_gather_sections_and_filters(fresh: Twin) -> None:
    fresh.firewall.add({"name": "rdplab-block", "action": "Block", "local_port": "3389"})
    fresh.zone = NET.zone
    fresh.http_reach = NET.pki_address.__eq__
    g = fresh.gather({"probe_urls": [NET.crl_url, "http://nowhere.lab/x.crl"]})
    assert set(g) == {
        "computer",
        "registry",
        "firewall",
        "services",
        "certificates",
        "dns",
        "credssp",
        "hotfixes",
        "probes",
    }
    assert g["computer"] == {
        "name": "HOST",
        "os_caption": "Microsoft Windows Server 2022 Datacenter",
        "os_build": "10.0.20348.2849",
        "kind": "server",
    }
    # watched keys (with their subtrees) that exist; nothing else
    assert set(g["registry"]) == {
        win.TS_KEY,
        win.TS_KEY + r"\WinStations",
        win.RDP_TCP_KEY,
        win.TS_POLICY_KEY,
    }
    assert g["registry"][win.RDP_TCP_KEY]["values"]["PortNumber"] == {
        "type": "REG_DWORD",
        "data": 3389,
    }
    assert g["registry"][win.TS_KEY]["subkeys"] == ["WinStations"]
    # RD groups plus any rule covering an RDP port (ICMP's "Any" does); WinRM, SMB are not
    names = {r["name"] for r in g["firewall"]["rules"]}
    assert names == {
        "RemoteDesktop-UserMode-In-TCP",
        "RemoteDesktop-UserMode-In-UDP",
        "RemoteDesktop-Shadow-In-TCP",
        "RemoteDesktop-In-TCP-WS",
        "RemoteDesktop-In-TCP-WSS",
        "rdplab-block",
        "CoreNet-ICMP4-DUFRAG-In",
    }
    assert g["firewall"]["active_profile"] == "Private"
    assert set(g["firewall"]["profiles"]) == {"Domain", "Private", "Public"}
    assert set(g["services"]) == set(win.WATCHED_SERVICES)  # WinRM is not watched
    (cert,) = g["certificates"][RD_STORE]
    assert cert["key"] == "ok" and cert["subject"] == "CN=HOST" and cert["self_signed"]
    assert g["credssp"] == {"tspkg_version": "10.0.20348.2849"}
    assert g["hotfixes"] == []
    assert g["probes"][NET.crl_url]["reachable"] is True
    assert g["probes"]["http://nowhere.lab/x.crl"] == {
        "reachable": False,
        "detail": "nowhere.lab does not resolve",
    }
    facts = Facts.parse("host", g)
    assert not facts.inbound(3389, win.TS_PROGRAM).allowed


def test_gather_follows_a_moved_listener_port(fresh: Twin) -> None:
    fresh.firewall.add({"name": "alt", "local_port": "3390"})
    fresh.registry.set(win.RDP_TCP_KEY, "PortNumber", "REG_DWORD", 3390)
    names = {r["name"] for r in fresh.gather()["firewall"]["rules"]}
    assert "alt" in names


def test_gather_is_not_aliased_to_state(fresh: Twin) -> None:
    g = fresh.gather()
    g["registry"][win.TS_KEY]["values"]["fDenyTSConnections"]["data"] = 1
    g["dns"]["hosts"]["x"] = "y"
    assert fresh.lookup(win.TS_KEY, "fDenyTSConnections") == 0
    assert fresh.dns.hosts == {}


def test_gather_custom_keys(client: Twin) -> None:
    g = client.gather({"keys": [win.MSLICENSING_KEY]})
    assert set(g["registry"]) == {
        win.MSLICENSING_KEY,
        win.MSLICENSING_KEY + r"\HardwareID",
        win.MSLICENSING_KEY + r"\Store",
        win.MSLICENSING_KEY + r"\Store\LICENSE000",
    }
    assert mslicensing.problems(g["registry"]) == []


def test_listening(fresh: Twin) -> None:
    assert fresh.listening() == {3389: "RDP-Tcp", 3387: "RDP WebSocket", 3392: "RDP WebSocket"}
    fresh.registry.set(win.TS_POLICY_KEY, "fDenyTSConnections", "REG_DWORD", 1)
    assert fresh.listening() == {}


def test_snapshot_leaves_out_volatile_dns_cache(fresh: Twin) -> None:
    before = fresh.snapshot()
    fresh.dns.cache["x.lab"] = "1.2.3.4"
    assert fresh.snapshot() == before
    fresh.dns.hosts["x.lab"] = "1.2.3.4"
    assert fresh.snapshot()["hosts"] == {"x.lab": "1.2.3.4"}


@pytest.mark.parametrize(
    ("section", "value"),
    [("registry", None), ("hotfixes", {}), ("probes", [])],
)
def test_facts_parse_rejects_malformed_sections(fresh: Twin, section: str, value: Any) -> None:
    g = fresh.gather()
    g[section] = value
    with pytest.raises(BackendError, match=section):
        Facts.parse("host", g)


def test_facts_parse_rejects_malformed_firewall(fresh: Twin) -> None:
    g = fresh.gather()
    g["firewall"]["rules"].append({"name": "x", "direction": "sideways"})
    with pytest.raises(BackendError, match="malformed"):
        Facts.parse("host", g)


def test_facts_parse_rejects_malformed_tspkg_version(fresh: Twin) -> None:
    g = fresh.gather()
    g["credssp"]["tspkg_version"] = "unknown"
    with pytest.raises(BackendError, match="tspkg"):
        Facts.parse("host", g)


def test_reg_delete_empty_name_does_not_delete_the_tree(fresh: Twin) -> None:
    fresh.apply([Op("reg.delete", {"key": win.TS_KEY, "name": ""})])
    assert fresh.registry.key(win.RDP_TCP_KEY) is not None
    assert fresh.lookup(win.TS_KEY, "fDenyTSConnections") == 0


def test_port_range_selector_never_leaves_a_half_applied_batch(fresh: Twin) -> None:
    ops = [
        Op(
            "reg.set",
            {"key": win.TS_KEY, "name": "fDenyTSConnections", "type": "REG_DWORD", "data": 1},
        ),
        Op("fw.rule.set", {"match": {"local_port": "3387-3392"}, "enabled": False}),
    ]
    before = fresh.snapshot()
    try:
        result = fresh.apply(ops)
    except ValueError:
        pytest.fail(
            "uncaught ValueError; fDenyTSConnections is now "
            f"{fresh.lookup(win.TS_KEY, 'fDenyTSConnections')}"
        )
    if result.errors:
        assert fresh.snapshot() == before
    else:
        ws = [r for r in fresh.firewall.rules if r.group == win.RD_WS_GROUP]
        assert ws and not any(r.enabled for r in ws)


def test_restore_puts_back_only_what_the_backup_covers(fresh: Twin) -> None:
    """issue 7 item 13: a value backup restores that value; a value Windows (or anyone) wrote
    in the same key since is left alone, and does not make the restore report a change."""
    set_port = Op(
        "reg.set",
        {"key": win.RDP_TCP_KEY, "name": "PortNumber", "type": "REG_DWORD", "data": 3390},
    )
    backup = fresh.apply([set_port]).results[0].backup
    assert backup is not None
    fresh.registry.set(win.TS_KEY, "GlassSessionId", "REG_DWORD", 7)  # a run-time write
    fresh.registry.set(win.RDP_TCP_KEY, "RuntimeNote", "REG_SZ", "written since")
    r = fresh.apply([Op("reg.restore", {"backup": backup})]).results[0]
    assert (r.changed, r.error) == (True, None)
    assert fresh.lookup(win.RDP_TCP_KEY, "PortNumber") == 3389
    assert fresh.lookup(win.RDP_TCP_KEY, "RuntimeNote") == "written since"
    again = fresh.apply([Op("reg.restore", {"backup": backup})]).results[0]
    assert (again.changed, again.detail) == (
        False,
        rf"{win.RDP_TCP_KEY}\PortNumber already as backed up",
    )


def test_restore_of_a_key_deletion_puts_the_tree_back(fresh: Twin) -> None:
    sub = win.RDP_TCP_KEY + r"\rdplab-test"
    fresh.registry.set(sub, "A", "REG_SZ", "a")
    backup = fresh.apply([Op("reg.delete", {"key": sub})]).results[0].backup
    assert backup is not None and fresh.registry.key(sub) is None
    assert fresh.apply([Op("reg.restore", {"backup": backup})]).results[0].changed
    assert fresh.lookup(sub, "A") == "a"


def test_a_default_value_is_set_backed_up_and_restored(fresh: Twin) -> None:
    """issue 7 item 8: the key's default entry (empty name) round-trips through a backup."""
    key = r"HKLM\SOFTWARE\rdplab\contract"
    first = Op("reg.set", {"key": key, "name": "", "type": "REG_SZ", "data": "first"})
    second = Op("reg.set", {"key": key, "name": "", "type": "REG_SZ", "data": "second"})
    results = fresh.apply([first, second]).results
    assert [r.changed for r in results] == [True, True]
    assert fresh.apply([Op("reg.restore", {"backup": results[1].backup or ""})]).results[0].changed
    assert fresh.lookup(key, "") == "first"
    assert fresh.registry_view([key])[key]["values"] == {"": {"type": "REG_SZ", "data": "first"}}


def test_restore_of_a_value_in_a_new_key_removes_the_keys_it_made(fresh: Twin) -> None:
    """A value set in a key that did not exist: the restore deletes the value and the keys the
    set had to create (while they hold nothing else), so the machine is back as it was."""
    key = win.TS_CLIENT_POLICY_KEY + r"\rdplab-new"
    assert fresh.registry.key(win.TS_CLIENT_POLICY_KEY) is None
    before = fresh.registry.snapshot()
    op = Op("reg.set", {"key": key, "name": "X", "type": "REG_DWORD", "data": 1})
    backup = fresh.apply([op]).results[0].backup
    assert fresh.journal[-1]["absent_from"] == win.TS_CLIENT_POLICY_KEY
    assert fresh.apply([Op("reg.restore", {"backup": backup or ""})]).results[0].changed
    assert fresh.registry.snapshot() == before
    assert not fresh.apply([Op("reg.restore", {"backup": backup or ""})]).results[0].changed
    # a value someone else wrote in a created key since is kept, with its key
    fresh.apply([op])
    fresh.registry.set(win.TS_CLIENT_POLICY_KEY, "Other", "REG_DWORD", 2)
    backup = fresh.journal[-1]
    fresh._restore(backup)
    assert fresh.lookup(win.TS_CLIENT_POLICY_KEY, "Other") == 2
    assert fresh.lookup(key, "X") is None
