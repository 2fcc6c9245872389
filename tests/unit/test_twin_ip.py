"""The IPv4 configuration twin (rdplab.twin.ip), its ops (ip.static, ip.dhcp.lease), the
optional ``ip`` facts section and its place in the no-collateral snapshot."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from rdplab.agent import emulator
from rdplab.baselines import build_twin
from rdplab.errors import BackendError
from rdplab.facts import Facts
from rdplab.lab import load_lab
from rdplab.network import Network
from rdplab.ops import VOCABULARY, Op, validate_op
from rdplab.providers.sim import scenario_twin
from rdplab.scenario import diff
from rdplab.twin import Twin
from rdplab.twin.ip import Interface, IpAddress, IpConfig, wants_ip

REPO = Path(__file__).resolve().parents[2]
NETWORK_PS1 = REPO / "src" / "rdplab" / "agent" / "parts" / "network.ps1"
NET = Network()
ETH = "Ethernet"


def static(address: str, prefix: int = 24, gateway: str | None = None, alias: str = ETH) -> Op:
    args: dict[str, Any] = {"alias": alias, "address": address, "prefix": prefix}
    if gateway is not None:
        args["gateway"] = gateway
    return Op("ip.static", args)


def lease(address: str, alias: str = ETH) -> Op:
    return Op("ip.dhcp.lease", {"alias": alias, "address": address})


@pytest.fixture
def host() -> Twin:
    twin = build_twin("windows-server-2022", "HOST")
    twin.ip = IpConfig.lab_default(NET.host_address)
    return twin


def one(twin: Twin, op: Op) -> tuple[bool, str, str | None]:
    (r,) = twin.apply([op]).results
    return r.changed, r.detail, r.error


# -- the area ---------------------------------------------------------------------------------
def test_lab_default_is_one_dhcp_ethernet_interface() -> None:
    ip = IpConfig.lab_default("192.168.56.11")
    assert ip.snapshot() == {
        "interfaces": [
            {
                "alias": "Ethernet",
                "dhcp": True,
                "addresses": [{"address": "192.168.56.11", "prefix": 24, "origin": "Dhcp"}],
                "gateway": None,
            }
        ]
    }
    assert ip.address() == "192.168.56.11"
    assert IpConfig.lab_default("10.0.0.5", 16, "10.0.0.1").interfaces[0].gateway == "10.0.0.1"
    json.dumps(ip.snapshot())  # JSON-able
    assert IpConfig.from_json(ip.snapshot()) == ip


def test_a_baseline_twin_has_no_interface_and_no_ip_in_its_snapshot() -> None:
    twin = build_twin("windows-server-2022", "HOST")
    assert twin.ip.interfaces == []
    assert twin.address() is None
    assert "ip" not in twin.snapshot()
    assert "ip" not in twin.gather()
    assert twin.gather({"ip": True})["ip"] == {"interfaces": []}


def test_address_is_the_first_address_of_the_first_interface() -> None:
    ip = IpConfig(
        [
            Interface("Ethernet", False, [], None),
            Interface("Ethernet 2", True, [IpAddress(address="10.1.1.1", prefix=8, origin="Dhcp")]),
        ]
    )
    assert ip.address() is None  # the first interface has none
    ip.interfaces.reverse()
    assert ip.address() == "10.1.1.1"


def test_scenario_twins_hold_their_lab_address() -> None:
    lab = load_lab(REPO / "labs" / "rdp-0x904.yaml")
    scenario = next(s for s in lab.scenarios if s.healthy)
    net = scenario.network
    for role, address in (("host", net.host_address), ("client", net.client_address)):
        twin = scenario_twin(scenario, role)  # type: ignore[arg-type]
        assert twin.address() == address
        assert twin.ip.snapshot() == IpConfig.lab_default(address).snapshot()
        assert twin.snapshot()["ip"]["interfaces"][0]["dhcp"] is True


# -- ip.static ------------------------------------------------------------------------------------
def test_static_sets_the_address_and_a_second_run_changes_nothing(host: Twin) -> None:
    changed, detail, error = one(host, static("192.168.56.11"))
    assert (changed, error) == (True, None)
    assert detail == "Ethernet: static 192.168.56.11/24 (was DHCP 192.168.56.11/24)"
    iface = host.ip.interfaces[0]
    assert iface.dhcp is False
    assert iface.addresses == [{"address": "192.168.56.11", "prefix": 24, "origin": "Manual"}]
    assert iface.gateway is None
    changed, detail, error = one(host, static("192.168.56.11"))
    assert (changed, detail, error) == (False, "Ethernet already static 192.168.56.11/24", None)


def test_static_replaces_every_address_and_sets_the_gateway(host: Twin) -> None:
    host.ip.interfaces[0].addresses.append(
        IpAddress(address="192.168.56.40", prefix=24, origin="Dhcp")
    )
    changed, detail, _ = one(host, static("192.168.56.20", gateway="192.168.56.1"))
    assert changed
    assert detail == (
        "Ethernet: static 192.168.56.20/24, gateway 192.168.56.1"
        " (was DHCP 192.168.56.11/24, 192.168.56.40/24)"
    )
    assert host.ip.snapshot()["interfaces"][0] == {
        "alias": "Ethernet",
        "dhcp": False,
        "addresses": [{"address": "192.168.56.20", "prefix": 24, "origin": "Manual"}],
        "gateway": "192.168.56.1",
    }
    assert host.address() == "192.168.56.20"
    assert one(host, static("192.168.56.20", gateway="192.168.56.1"))[0] is False
    # without a gateway argument the gateway stays: still no change
    assert one(host, static("192.168.56.20"))[:2] == (
        False,
        "Ethernet already static 192.168.56.20/24, gateway 192.168.56.1",
    )
    # another gateway, or another prefix, is a change
    assert one(host, static("192.168.56.20", gateway="192.168.56.254"))[0] is True
    assert one(host, static("192.168.56.20", prefix=16, gateway="192.168.56.254"))[0] is True
    assert host.ip.interfaces[0].addresses[0]["prefix"] == 16


def test_static_keeps_the_gateway_the_lease_gave(host: Twin) -> None:
    host.ip.interfaces[0].gateway = "192.168.56.1"
    assert one(host, static("192.168.56.11"))[0] is True
    assert host.ip.interfaces[0].gateway == "192.168.56.1"
    assert host.ip.interfaces[0].dhcp is False


def test_static_alias_is_case_insensitive(host: Twin) -> None:
    changed, detail, error = one(host, static("192.168.56.11", alias="ETHERNET"))
    assert changed and error is None
    assert detail.startswith("Ethernet: ")  # the interface's own spelling


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (static("192.168.56.11", alias="Wi-Fi"), "ip.static: no IPv4 interface named 'Wi-Fi'"),
        (static("192.168.56.300"), "ip.static: '192.168.56.300' is not an IPv4 address"),
        (static("192.168.056.11"), "ip.static: '192.168.056.11' is not an IPv4 address"),
        (static("fe80::1"), "ip.static: 'fe80::1' is not an IPv4 address"),
        (static("192.168.56.11", prefix=0), "ip.static: prefix must be 1 to 32, not 0"),
        (static("192.168.56.11", prefix=33), "ip.static: prefix must be 1 to 32, not 33"),
        (
            static("192.168.56.11", gateway="192.168.57.1"),
            "ip.static: gateway 192.168.57.1 is not in 192.168.56.0/24",
        ),
        (
            static("192.168.56.11", gateway="192.168.56.11"),
            "ip.static: gateway 192.168.56.11 is the address itself",
        ),
        (static("192.168.56.11", gateway="x"), "ip.static: 'x' is not an IPv4 address"),
        (lease("192.168.56.23", alias="Wi-Fi"), "ip.dhcp.lease: no IPv4 interface named 'Wi-Fi'"),
        (lease("192.168.56"), "ip.dhcp.lease: '192.168.56' is not an IPv4 address"),
    ],
)
def test_bad_ip_ops_fail_and_change_nothing(host: Twin, op: Op, message: str) -> None:
    before = host.snapshot()
    changed, _, error = one(host, op)
    assert error == message
    assert changed is False
    assert host.snapshot() == before


def test_kept_gateway_outside_the_new_subnet_is_refused(host: Twin) -> None:
    host.ip.interfaces[0].gateway = "192.168.56.1"
    _, _, error = one(host, static("10.0.0.5", prefix=8))
    assert error == "ip.static: gateway 192.168.56.1 is not in 10.0.0.0/8"


def test_ops_validate_their_argument_types() -> None:
    assert set(VOCABULARY) >= {"ip.static", "ip.dhcp.lease"}
    validate_op(static("192.168.56.11", gateway="192.168.56.1"))
    validate_op(lease("192.168.56.23"))
    with pytest.raises(Exception, match="argument 'prefix' has type str"):
        validate_op(Op("ip.static", {"alias": ETH, "address": "1.2.3.4", "prefix": "24"}))
    with pytest.raises(Exception, match="missing argument 'prefix'"):
        validate_op(Op("ip.static", {"alias": ETH, "address": "1.2.3.4"}))


# -- ip.dhcp.lease --------------------------------------------------------------------------------
def test_lease_moves_the_dhcp_address_once(host: Twin) -> None:
    changed, detail, error = one(host, lease(NET.stale_address))
    assert (changed, error) == (True, None)
    assert detail == "Ethernet: DHCP lease 192.168.56.99/24 (was DHCP 192.168.56.11/24)"
    assert host.ip.interfaces[0].dhcp is True
    assert host.ip.interfaces[0].addresses == [
        {"address": NET.stale_address, "prefix": 24, "origin": "Dhcp"}
    ]
    assert host.address() == NET.stale_address
    assert one(host, lease(NET.stale_address)) == (
        False,
        "Ethernet already leased 192.168.56.99/24",
        None,
    )


def test_lease_keeps_the_prefix_and_gives_24_to_an_empty_interface(host: Twin) -> None:
    host.ip.interfaces[0].addresses[0]["prefix"] = 16
    one(host, lease("192.168.7.7"))
    assert host.ip.interfaces[0].addresses[0]["prefix"] == 16
    host.ip.interfaces[0].addresses = []
    one(host, lease("192.168.7.8"))
    assert host.ip.interfaces[0].addresses[0] == {
        "address": "192.168.7.8",
        "prefix": 24,
        "origin": "Dhcp",
    }


def test_no_lease_to_move_on_a_static_interface(host: Twin) -> None:
    one(host, static("192.168.56.11"))
    _, _, error = one(host, lease("192.168.56.23"))
    assert error == "ip.dhcp.lease: DHCP is off on 'Ethernet': no lease to move"


def test_a_failing_batch_puts_the_ip_configuration_back(host: Twin) -> None:
    before = host.snapshot()
    result = host.apply(
        [
            lease("192.168.56.23"),
            static("192.168.56.11", gateway="192.168.56.1"),
            Op("svc.stop", {"name": "RdplabNoSuchService"}),
        ]
    )
    assert [r.changed for r in result.results] == [False, False, False]
    assert result.results[-1].error
    assert host.snapshot() == before
    assert host.ip.interfaces[0].dhcp is True


# -- facts ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_", "gathered"),
    [
        ({"ip": True}, True),
        ({"ip": ["ipv4"]}, True),
        ({"ip": False}, False),
        ({"ip": []}, False),
        ({"ip": None}, False),
        ({}, False),
        ({"ports": [3389]}, False),
    ],
)
def test_gather_has_ip_only_when_asked(
    host: Twin, request_: dict[str, Any], gathered: bool
) -> None:
    assert wants_ip(request_) is gathered
    raw = host.gather(request_)
    assert ("ip" in raw) is gathered
    facts = Facts.parse("host", raw)
    assert facts.ip_gathered is gathered
    if gathered:
        assert raw["ip"] == host.ip.snapshot()
        assert facts.ipv4() == [
            {
                "alias": "Ethernet",
                "address": NET.host_address,
                "prefix": 24,
                "origin": "Dhcp",
                "dhcp": True,
            }
        ]
        assert facts.ip_interfaces() == host.ip.snapshot()["interfaces"]
    else:
        assert facts.ipv4() == []
        assert facts.ip_interfaces() == []


def test_ipv4_flattens_every_interface_in_order() -> None:
    twin = build_twin("windows-11", "CLIENT")
    twin.ip = IpConfig(
        [
            Interface(
                "Ethernet",
                False,
                [
                    IpAddress(address="10.0.0.5", prefix=24, origin="Manual"),
                    IpAddress(address="10.0.0.6", prefix=24, origin="Manual"),
                ],
                "10.0.0.1",
            ),
            Interface("Ethernet 2", True, []),
            Interface("Wi-Fi", True, [IpAddress(address="172.16.0.9", prefix=12, origin="Dhcp")]),
        ]
    )
    facts = Facts.parse("client", twin.gather({"ip": ["ipv4"]}))
    assert [(a["alias"], a["address"], a["origin"], a["dhcp"]) for a in facts.ipv4()] == [
        ("Ethernet", "10.0.0.5", "Manual", False),
        ("Ethernet", "10.0.0.6", "Manual", False),
        ("Wi-Fi", "172.16.0.9", "Dhcp", True),
    ]
    assert [i["alias"] for i in facts.ip_interfaces()] == ["Ethernet", "Ethernet 2", "Wi-Fi"]


def _with(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of raw with ip's field at path (dot-separated, numbers index lists) set."""
    out = copy.deepcopy(raw)
    node: Any = out
    *steps, last = path.split(".")
    for step in steps:
        node = node[int(step)] if step.isdigit() else node[step]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("ip", None, "facts field 'ip.interfaces' is missing or not a list"),
        ("ip", {"interfaces": {}}, "facts field 'ip.interfaces' is missing or not a list"),
        ("ip.interfaces.0", "Ethernet", "facts field 'ip.interfaces[0]' is not an object"),
        ("ip.interfaces.0.alias", "", "facts field 'ip.interfaces[0].alias' is not a non-empty"),
        ("ip.interfaces.0.dhcp", "Enabled", "facts field 'ip.interfaces[0].dhcp' is not a boolean"),
        (
            "ip.interfaces.0.gateway",
            "192.168.56",
            "facts field 'ip.interfaces[0].gateway' is not an IPv4 address or null",
        ),
        ("ip.interfaces.0.addresses", None, "facts field 'ip.interfaces[0].addresses' is not a"),
        (
            "ip.interfaces.0.addresses.0.address",
            "fe80::1",
            "facts field 'ip.interfaces[0].addresses[0].address' is not an IPv4 address",
        ),
        (
            "ip.interfaces.0.addresses.0.prefix",
            33,
            "facts field 'ip.interfaces[0].addresses[0].prefix' is not an integer from 0 to 32",
        ),
        (
            "ip.interfaces.0.addresses.0.prefix",
            True,
            "facts field 'ip.interfaces[0].addresses[0].prefix' is not an integer from 0 to 32",
        ),
        (
            "ip.interfaces.0.addresses.0.origin",
            "WellKnown",
            "facts field 'ip.interfaces[0].addresses[0].origin' is not one of ('Dhcp', 'Manual')",
        ),
    ],
)
def test_malformed_ip_facts_name_the_machine_and_the_field(
    host: Twin, path: str, value: Any, message: str
) -> None:
    raw = _with(host.gather({"ip": True}), path, value)
    with pytest.raises(BackendError) as info:
        Facts.parse("host", raw)
    assert info.value.host == "host"
    assert str(info.value).startswith("host: " + message), str(info.value)


def test_repeated_alias_in_the_facts_is_refused(host: Twin) -> None:
    raw = host.gather({"ip": True})
    raw["ip"]["interfaces"].append(dict(raw["ip"]["interfaces"][0], alias="ETHERNET"))
    with pytest.raises(BackendError, match=r"'ip\.interfaces\[1\]\.alias' repeats"):
        Facts.parse("host", raw)


# -- the no-collateral diff -----------------------------------------------------------------------
def test_snapshot_diff_shows_a_moved_address(host: Twin) -> None:
    base = host.snapshot()
    one(host, lease("192.168.56.23"))
    assert diff(base, host.snapshot()) == [
        ("ip/interfaces/0/addresses/0/address", NET.host_address, "192.168.56.23"),
    ]
    moved = host.snapshot()
    one(host, static(NET.host_address))
    assert diff(moved, host.snapshot()) == [
        ("ip/interfaces/0/addresses/0/address", "192.168.56.23", NET.host_address),
        ("ip/interfaces/0/addresses/0/origin", "Dhcp", "Manual"),
        ("ip/interfaces/0/dhcp", True, False),
    ]
    # against the healthy baseline, the fix leaves DHCP off and the origin Manual
    assert [c[0] for c in diff(base, host.snapshot())] == [
        "ip/interfaces/0/addresses/0/origin",
        "ip/interfaces/0/dhcp",
    ]


# -- the emulator behind the loopback transports --------------------------------------------------
def _call(twin: Twin, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = json.dumps({"rdplab_agent": 1, "id": "t", **body}).encode()
    code, out, _ = emulator.handle(twin, request, agent_version="X")
    return code, json.loads(out)


def test_emulator_answers_ip_ops_and_facts_from_the_twin(host: Twin) -> None:
    ops = [static(NET.host_address, gateway="192.168.56.1").to_json()]
    code, first = _call(host, {"ops": ops})
    assert code == 0 and [r["changed"] for r in first["results"]] == [True]
    code, again = _call(host, {"ops": ops})
    assert code == 0 and [r["changed"] for r in again["results"]] == [False]
    code, answer = _call(host, {"gather": {"ip": ["ipv4"]}})
    assert code == 0
    facts = Facts.parse("host", answer["facts"])
    assert facts.ipv4()[0]["origin"] == "Manual"
    assert facts.ip_interfaces()[0]["gateway"] == "192.168.56.1"
    # the lab break is answered by the twin here; agent.ps1 refuses it on Windows
    code, moved = _call(host, {"ops": [lease("192.168.56.23").to_json()]})
    assert code == 1 and "DHCP is off" in moved["results"][0]["error"]


# -- agent.ps1's network part says what the twin says --------------------------------------------
def test_agent_network_part_uses_the_twins_messages() -> None:
    text = NETWORK_PS1.read_text(encoding="utf-8")
    for phrase in (
        "{0}: no IPv4 interface named {1}",
        "{0}: {1} is not an IPv4 address",
        "{0}: prefix must be 1 to 32, not {1}",
        "{0}: gateway {1} is not in {2}",
        "{0}: gateway {1} is the address itself",
        "'{0} already {1}'",
        "'{0}: {1} (was {2})'",
        "'static {0}/{1}'",
        "', gateway '",
        "'{0}, no address'",
        "ip.dhcp.lease: a Windows DHCP client cannot choose its lease",
    ):
        assert phrase in text, phrase
    assert "$script:UndoHandlers['ip'] = 'Undo-IpConfig'" in text
