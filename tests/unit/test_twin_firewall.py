"""Firewall twin: rule evaluation (block beats allow, profiles, defaults, programs, ports)
and the rule ops (selectors, set, remove, add)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest

from rdplab.errors import OpError
from rdplab.twin.firewall import Firewall, Rule, port_matches

SVCHOST = r"%SystemRoot%\system32\svchost.exe"
RDPSA = r"%SystemRoot%\system32\RdpSa.exe"


def fw(*rules: dict[str, Any], active: str = "Private", **profiles: dict[str, Any]) -> Firewall:
    return Firewall.from_json(
        {"active_profile": active, "profiles": profiles, "rules": list(rules)}
    )


ALLOW_RDP = {
    "name": "AllowRdp",
    "group": "Remote Desktop",
    "local_port": "3389",
    "program": SVCHOST,
}
ALLOW_UDP = {**ALLOW_RDP, "name": "AllowRdpUdp", "protocol": "UDP"}
BLOCK_RDP = {"name": "BlockRdp", "action": "Block", "local_port": "3389"}


# -- evaluation -----------------------------------------------------------------------------
def test_defaults_inbound_block_outbound_allow() -> None:
    f = fw()
    inbound = f.evaluate("In", "TCP", 3389)
    assert not inbound.allowed and inbound.rules == []
    assert "Private profile default is Block" in inbound.reason
    assert f.evaluate("Out", "TCP", 3389).allowed


def test_profile_defaults_are_configurable() -> None:
    f = fw(Private={"default_inbound": "Allow", "default_outbound": "Block"})
    assert f.evaluate("In", "TCP", 1234).allowed
    assert not f.evaluate("Out", "TCP", 443).allowed


def test_allow_rule_opens_its_port_only() -> None:
    f = fw(ALLOW_RDP)
    v = f.evaluate("In", "TCP", 3389, SVCHOST)
    assert v.allowed and v.rules == ["AllowRdp"]
    assert not f.evaluate("In", "TCP", 3390, SVCHOST).allowed


def test_block_beats_allow_regardless_of_order() -> None:
    for rules in ((ALLOW_RDP, BLOCK_RDP), (BLOCK_RDP, ALLOW_RDP)):
        v = fw(*rules).evaluate("In", "TCP", 3389, SVCHOST)
        assert not v.allowed
        assert v.rules == ["BlockRdp"]
        assert "BlockRdp" in v.reason


def test_disabled_rules_do_not_apply() -> None:
    assert not fw({**ALLOW_RDP, "enabled": False}).evaluate("In", "TCP", 3389).allowed
    assert fw(ALLOW_RDP, {**BLOCK_RDP, "enabled": False}).evaluate("In", "TCP", 3389).allowed


def test_protocol_must_match() -> None:
    assert not fw(ALLOW_UDP).evaluate("In", "TCP", 3389).allowed
    assert fw(ALLOW_UDP).evaluate("In", "UDP", 3389).allowed
    assert fw({**ALLOW_RDP, "protocol": "Any"}).evaluate("In", "TCP", 3389).allowed


def test_direction_must_match_and_outbound_uses_remote_port() -> None:
    out_block = {"name": "OutBlock", "direction": "Out", "action": "Block", "remote_port": "3389"}
    f = fw(out_block)
    assert not f.evaluate("Out", "TCP", 3389).allowed
    assert f.evaluate("Out", "TCP", 3390).allowed
    # the outbound rule says nothing about inbound traffic
    assert fw(out_block, ALLOW_RDP).evaluate("In", "TCP", 3389).allowed
    # a rule's local_port does not scope outbound traffic
    local_only = {"name": "L", "direction": "Out", "action": "Block", "local_port": "3389"}
    assert not fw(local_only).evaluate("Out", "TCP", 443).allowed


@pytest.mark.parametrize(
    ("profiles", "active", "allowed"),
    [
        (["Public"], "Private", False),
        (["Public"], "Public", True),
        ("Domain,Private", "Private", True),
        ("Domain,Private", "Public", False),
        (None, "Domain", True),  # not given: Any
    ],
)
def test_rule_applies_only_to_its_profiles(profiles: Any, active: str, allowed: bool) -> None:
    rule = {**ALLOW_RDP, "profiles": profiles} if profiles else ALLOW_RDP
    assert fw(rule, active=active).evaluate("In", "TCP", 3389).allowed is allowed


def test_block_on_another_profile_does_not_block() -> None:
    f = fw(ALLOW_RDP, {**BLOCK_RDP, "profiles": ["Public"]})
    assert f.evaluate("In", "TCP", 3389).allowed
    f.active_profile = "Public"
    assert not f.evaluate("In", "TCP", 3389).allowed


def test_disabled_profile_allows_everything() -> None:
    f = fw(BLOCK_RDP, Private={"enabled": False})
    v = f.evaluate("In", "TCP", 3389)
    assert v.allowed and v.rules == []
    assert "off" in v.reason
    # only the active profile's switch counts
    assert not fw(BLOCK_RDP, Public={"enabled": False}).evaluate("In", "TCP", 3389).allowed


def test_program_scoping() -> None:
    shadow = {"name": "Shadow", "local_port": "Any", "program": RDPSA}
    f = fw(shadow)
    # the RdpSa.exe rule does not allow traffic to svchost
    assert not f.evaluate("In", "TCP", 3389, SVCHOST).allowed
    assert f.evaluate("In", "TCP", 3389, RDPSA).allowed
    assert f.evaluate("In", "TCP", 3389, RDPSA.upper()).allowed  # paths fold case
    # program None: scoping ignored
    assert f.evaluate("In", "TCP", 3389, None).allowed
    # a rule for Any program covers every program
    assert fw({**shadow, "program": "Any"}).evaluate("In", "TCP", 3389, SVCHOST).allowed


def test_program_scoped_block_does_not_hit_other_programs() -> None:
    block_sa = {"name": "BlockSa", "action": "Block", "local_port": "Any", "program": RDPSA}
    assert fw(ALLOW_RDP, block_sa).evaluate("In", "TCP", 3389, SVCHOST).allowed


@pytest.mark.parametrize("keyword", ["RPC-EPMap", "RPC", "IPHTTPSIn", "PlayToDiscovery"])
def test_port_keywords_never_match_a_fixed_port(keyword: str) -> None:
    """Windows rules may carry port keywords (dynamic ports); they match no fixed port."""
    assert port_matches([keyword], 135) is False
    assert port_matches([keyword, "3389"], 3389) is True


@pytest.mark.parametrize(
    ("spec", "port", "hit"),
    [
        ("3387-3392", 3387, True),
        ("3387-3392", 3390, True),
        ("3387-3392", 3392, True),
        ("3387-3392", 3386, False),
        ("3387-3392", 3393, False),
        ("80, 443,3389", 443, True),
        ("80, 443,3389", 3389, True),
        ("80, 443,3389", 8080, False),
        ("80,1000-2000", 1500, True),
        (3389, 3389, True),
        (["3389", "3390"], 3390, True),
        (["3389", "3390"], 3391, False),
        ("Any", 1, True),
        ("", 65535, True),
    ],
)
def test_port_ranges_and_lists(spec: Any, port: int, hit: bool) -> None:
    rule = Rule.from_json({"name": "r", "local_port": spec})
    assert port_matches(rule.local_port, port) is hit
    assert fw({"name": "r", "local_port": spec}).evaluate("In", "TCP", port).allowed is hit


# -- rule definitions -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "port": "3389"}, "unknown field"),
        ({"display_name": "x"}, "missing field 'name'"),
        ({"name": "x", "direction": "in"}, "direction"),
        ({"name": "x", "direction": "Inbound"}, "direction"),
        ({"name": "x", "action": "Deny"}, "action"),
        ({"name": "x", "remote_address": "LocalNet"}, "remote_address 'LocalNet'"),
        ({"name": "x", "remote_address": "10.0.0.9-10.0.0.1"}, "remote_address"),
        ({"name": "x", "remote_address": ["10.0.0.0/33"]}, "remote_address"),
    ],
)
def test_rule_from_json_rejects(data: dict[str, Any], message: str) -> None:
    with pytest.raises(OpError, match=message):
        Rule.from_json(data)


LAB = ipaddress.ip_network("192.168.56.0/24")


@pytest.mark.parametrize(
    ("scope", "peer", "hit"),
    [
        (None, "203.0.113.7", True),  # the default: Any
        ("*", "203.0.113.7", True),
        ("LocalSubnet", "192.168.56.10", True),
        ("LocalSubnet", "192.168.57.10", False),
        ("localsubnet4", "192.168.56.10", True),
        ("192.168.56.10", "192.168.56.10", True),
        ("192.168.56.10", "192.168.56.11", False),
        ("10.0.0.0/8,192.168.56.0/255.255.255.0", "192.168.56.99", True),
        ("192.168.56.1-192.168.56.9", "192.168.56.10", False),
        ("192.168.56.1-192.168.56.9", "192.168.56.9", True),
        (["DNS", "DefaultGateway"], "192.168.56.10", False),  # not modelled: never a twin peer
        ("fe80::/64", "192.168.56.10", False),
    ],
)
def test_remote_address_scope(scope: Any, peer: str, hit: bool) -> None:
    rule = {**ALLOW_RDP, "remote_address": scope}
    verdict = fw(rule).evaluate("In", "TCP", 3389, SVCHOST, peer=peer, local_subnet=LAB)
    assert verdict.allowed is hit
    # without a peer, address scoping is not evaluated (facts-based detectors)
    assert fw(rule).evaluate("In", "TCP", 3389, SVCHOST).allowed


def test_remote_address_scoped_block_spares_other_peers() -> None:
    block = {**BLOCK_RDP, "remote_address": "192.168.56.66"}
    firewall = fw(ALLOW_RDP, block)
    assert not firewall.evaluate("In", "TCP", 3389, SVCHOST, peer="192.168.56.66").allowed
    assert firewall.evaluate("In", "TCP", 3389, SVCHOST, peer="192.168.56.10").allowed


def test_admitted_scope() -> None:
    lan = {**ALLOW_RDP, "remote_address": "LocalSubnet"}
    assert fw(lan).admitted("In", "TCP", 3389, SVCHOST) == ["LocalSubnet"]
    assert fw(lan, {**lan, "name": "b", "remote_address": "10.0.0.1"}).admitted(
        "In", "TCP", 3389, SVCHOST
    ) == ["LocalSubnet", "10.0.0.1"]
    assert fw(lan, {**ALLOW_RDP, "name": "c"}).admitted("In", "TCP", 3389, SVCHOST) == ["Any"]
    assert fw(lan, BLOCK_RDP).admitted("In", "TCP", 3389, SVCHOST) == []
    assert fw().admitted("In", "TCP", 3389) == []
    assert fw(Private={"enabled": False}).admitted("In", "TCP", 3389) == ["Any"]


def test_rule_round_trips_through_json() -> None:
    rule = Rule.from_json(
        {
            **ALLOW_RDP,
            "profiles": "Domain,Private",
            "local_port": "1-2,5",
            "remote_address": "LocalSubnet,10.0.0.0/24",
        }
    )
    assert rule.remote_address == ["LocalSubnet", "10.0.0.0/24"]
    assert Rule.from_json(rule.to_json()) == rule
    assert rule.display_name == "AllowRdp"  # defaults to the name


def test_active_profile_must_be_known() -> None:
    with pytest.raises(OpError, match="active_profile"):
        fw(active="Work")


# -- ops ------------------------------------------------------------------------------------
@pytest.fixture
def rdp_fw() -> Firewall:
    return fw(
        ALLOW_RDP,
        ALLOW_UDP,
        {
            "name": "WS",
            "group": "Remote Desktop (WebSocket)",
            "local_port": "3387",
            "program": "System",
        },
        {
            "name": "WSS",
            "group": "Remote Desktop (WebSocket)",
            "local_port": "3392",
            "program": "System",
        },
        {"name": "WinRM", "group": "Windows Remote Management", "local_port": "5985"},
    )


def test_set_by_group_counts_changes_and_is_idempotent(rdp_fw: Firewall) -> None:
    assert rdp_fw.set({"group": "remote desktop"}, False, None) == 2  # group folds case
    assert rdp_fw.set({"group": "Remote Desktop"}, False, None) == 0
    assert [r.enabled for r in rdp_fw.rules] == [False, False, True, True, True]
    assert not rdp_fw.evaluate("In", "TCP", 3389).allowed


def test_set_action(rdp_fw: Firewall) -> None:
    assert rdp_fw.set({"name": "WinRM"}, None, "Block") == 1
    assert rdp_fw.rules[-1].action == "Block"
    assert not rdp_fw.evaluate("In", "TCP", 5985).allowed
    with pytest.raises(OpError, match="Allow or Block"):
        rdp_fw.set({"name": "WinRM"}, None, "Deny")


def test_selector_all_keys_must_match(rdp_fw: Firewall) -> None:
    names = [r.name for r in rdp_fw.select({"group": "Remote Desktop", "protocol": "UDP"})]
    assert names == ["AllowRdpUdp"]
    assert rdp_fw.select({"group": "Remote Desktop", "action": "Block"}) == []


def test_selector_local_port_list_matches_any_listed_port(rdp_fw: Firewall) -> None:
    names = [r.name for r in rdp_fw.select({"local_port": "3387,3392"})]
    assert names == ["WS", "WSS"]
    assert [r.name for r in rdp_fw.select({"local_port": 3389, "protocol": "TCP"})] == ["AllowRdp"]


@pytest.mark.parametrize(
    "call",
    [
        lambda f: f.set({}, False, None),
        lambda f: f.set({}, None, "Block"),
        lambda f: f.remove({}),
        lambda f: f.select({}),
    ],
    ids=["set-enabled", "set-action", "remove", "select"],
)
def test_empty_selector_is_refused(rdp_fw: Firewall, call: Callable[[Firewall], object]) -> None:
    before = rdp_fw.snapshot()
    with pytest.raises(OpError, match="empty"):
        call(rdp_fw)
    assert rdp_fw.snapshot() == before


def test_unknown_selector_key_is_refused(rdp_fw: Firewall) -> None:
    with pytest.raises(OpError, match="unknown key 'program'"):
        rdp_fw.select({"program": "System"})


def test_remove_by_selector(rdp_fw: Firewall) -> None:
    assert rdp_fw.remove({"group": "Remote Desktop (WebSocket)"}) == 2
    assert [r.name for r in rdp_fw.rules] == ["AllowRdp", "AllowRdpUdp", "WinRM"]
    assert rdp_fw.remove({"group": "Remote Desktop (WebSocket)"}) == 0


def test_add_new_then_identical_then_replacing(rdp_fw: Firewall) -> None:
    assert rdp_fw.add(BLOCK_RDP) is True
    assert rdp_fw.add(BLOCK_RDP) is False
    n = len(rdp_fw.rules)
    assert not rdp_fw.evaluate("In", "TCP", 3389).allowed
    # same name (any case), new definition: replaced in place, not added
    assert rdp_fw.add({**BLOCK_RDP, "name": "blockrdp", "local_port": "3390"}) is True
    assert len(rdp_fw.rules) == n
    assert [r.local_port for r in rdp_fw.rules if r.name.lower() == "blockrdp"] == [["3390"]]
    assert rdp_fw.evaluate("In", "TCP", 3389).allowed


def test_add_rejects_bad_rule_without_change(rdp_fw: Firewall) -> None:
    before = rdp_fw.snapshot()
    with pytest.raises(OpError):
        rdp_fw.add({"name": "x", "bogus": 1})
    assert rdp_fw.snapshot() == before


def test_snapshot_round_trip(rdp_fw: Firewall) -> None:
    snap = rdp_fw.snapshot()
    again = Firewall.from_json(
        {
            "active_profile": snap["active_profile"],
            "profiles": snap["profiles"],
            "rules": list(snap["rules"].values()),
        }
    )
    assert again.snapshot() == snap


@pytest.mark.parametrize("port", ["70000", "3389-70000", "4000-3000"])
def test_rules_with_ports_windows_refuses_are_refused(port: str) -> None:
    """New-NetFirewallRule refuses ports outside 0-65535 (issue 7 item 7's contract case makes
    a firewall op fail this way, on the twin and on Windows)."""
    with pytest.raises(OpError, match="is not a port or range in 0-65535"):
        Rule.from_json({"name": "bad", "local_port": port})


@pytest.mark.parametrize("port", ["65535", "49152-65535", "RPC-EPMap", "IPHTTPSIn", "Any"])
def test_ports_and_keywords_windows_accepts_pass(port: str) -> None:
    assert Rule.from_json({"name": "ok", "local_port": port}).local_port == [port]


# -- Group Policy rules (issue 7 item 9) -----------------------------------------------------------
def _with_gpo_block() -> Firewall:
    from rdplab.twin.firewall import Profile

    gpo_block = Rule.from_json(
        {"name": "{GPO-GUID}", "action": "Block", "local_port": "3389", "store": "gpo"}
    )
    allow = Rule.from_json({"name": "RemoteDesktop-UserMode-In-TCP", "local_port": "3389"})
    profiles = {p: Profile() for p in ("Domain", "Private", "Public")}
    return Firewall(profiles, [allow, gpo_block], "Domain")


def test_a_rule_records_its_store() -> None:
    assert Rule.from_json({"name": "x"}).to_json()["store"] == "local"
    assert Rule.from_json({"name": "x", "store": "gpo"}).to_json()["store"] == "gpo"


def test_ops_change_only_local_rules() -> None:
    fw = _with_gpo_block()
    assert fw.remove({"action": "Block", "local_port": "3389"}) == 0  # the GPO rule stays
    assert not fw.evaluate("In", "TCP", 3389).allowed
    assert fw.set({"name": "{GPO-GUID}"}, enabled=False, action=None) == 0
    with pytest.raises(OpError, match="added to the local store"):
        fw.add({"name": "{GPO-GUID}", "store": "gpo"})
    assert fw.add({"name": "{GPO-GUID}", "action": "Allow"})  # a local rule of that name
    assert {(r.name, r.store) for r in fw.rules} >= {("{GPO-GUID}", "gpo"), ("{GPO-GUID}", "local")}
