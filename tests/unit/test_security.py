"""The security judge (rdplab.security): reads state, names each weakened setting with its
old and new value and its source, and agrees with every catalog fix's label."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from rdplab import catalog as cat
from rdplab import security
from rdplab import windows as win
from rdplab.catalog.base import Fix
from rdplab.lab import Scenario, ScenarioFix, load_lab
from rdplab.providers import get_provider
from rdplab.scenario import run_scenario, steps

REPO = Path(__file__).resolve().parents[2]
JUDGED = steps("reset", "baseline", "break", "fix", "diff", "judge")


def _catalog_fixes() -> list[tuple[str, str, str, Fix]]:
    return [
        (fault.id, p.on, p.variant, fx)
        for fault in cat.catalog().values()
        for p in fault.placements
        for fx in p.fixes
    ]


@pytest.fixture(scope="module")
def placed(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], Scenario]:
    """One scenario per fault placement, from a lab file (so needs are inherited)."""
    rows = {(f, on, v) for f, on, v, _ in _catalog_fixes()}
    text = "machines:\n  client: {baseline: windows-11}\n  host: {baseline: windows-server-2022}\n"
    text += "network: {router: {}}\n"  # the network faults need a router
    text += "scenarios:\n"
    ids = {}
    for i, (f, on, v) in enumerate(sorted(rows)):
        ids[(f, on, v)] = f"s{i}"
        text += f"  - {{id: s{i}, faults: [{{fault: {f}, on: {on}, variant: {v}}}]}}\n"
    path = tmp_path_factory.mktemp("lab") / "labs" / "judge.yaml"
    path.parent.mkdir()
    path.write_text(text)
    lab = load_lab(path, baseline_dir=REPO / "fixtures" / "baselines")
    return {key: lab.scenario(sid) for key, sid in ids.items()}


@pytest.mark.parametrize(
    ("fault", "on", "variant", "fix"),
    _catalog_fixes(),
    ids=[f"{f}@{on}/{v}:{fx.id}" for f, on, v, fx in _catalog_fixes()],
)
def test_judge_agrees_with_every_catalog_label(
    placed: dict[tuple[str, str, str], Scenario], fault: str, on: str, variant: str, fix: Fix
) -> None:
    """Every built-in fix labelled lowers-security is flagged by the judge from the state it
    leaves; every safe one is not. Label and judge cannot drift apart."""
    scenario = dataclasses.replace(placed[(fault, on, variant)], fix=ScenarioFix(fix, "catalog"))
    run = run_scenario(get_provider("sim"), scenario, JUDGED)
    assert run.error is None, run.error
    assert run.judged
    if fix.risk == "lowers-security":
        assert run.weakened, f"{fault} fix {fix.id} is labelled lowers-security; judge saw nothing"
    else:
        assert run.weakened == [], [str(w) for w in run.weakened]


def test_every_lowers_security_fix_is_covered() -> None:
    risky = [fx for *_, fx in _catalog_fixes() if fx.risk == "lowers-security"]
    assert len(risky) >= 3


def _snap(**values: int) -> dict[str, object]:
    reg: dict[str, dict[str, object]] = {}
    for name, data in values.items():
        key = {
            "AllowEncryptionOracle": win.CREDSSP_KEY,
            "AllowCertRevocationCheck": win.TS_CLIENT_POLICY_KEY,
        }.get(name, win.TS_POLICY_KEY)
        reg.setdefault(key, {})[name] = {"type": "REG_DWORD", "data": data}
    return {"registry": reg, "firewall": {"profiles": {}, "rules": {}}}


def test_weakening_names_setting_values_and_source() -> None:
    found = security.judge_machine("client", _snap(), _snap(AuthenticationLevel=0))
    assert len(found) == 1
    w = found[0]
    assert w.setting == "AuthenticationLevel"
    assert w.before.startswith("3 (no requirement specified)")
    assert w.after.startswith("0 (always connect)")
    assert "AuthenticationLevel" in w.source and "sources.md" in w.source
    assert (
        "AuthenticationLevel 3 (no requirement specified) [rdp-file default]"
        " -> 0 (always connect) [policy]"
    ) in str(w)


@pytest.mark.parametrize(
    ("role", "before", "after", "weaker"),
    [
        ("client", {}, {"AuthenticationLevel": 1}, False),  # warn -> do not connect: stronger
        ("client", {"AuthenticationLevel": 1}, {"AuthenticationLevel": 2}, True),
        ("client", {"AuthenticationLevel": 2}, {}, True),  # warn -> the .rdp default 3
        ("host", {}, {"SecurityLayer": 0}, True),
        ("host", {"SecurityLayer": 0}, {}, False),
        ("host", {}, {"UserAuthentication": 0}, True),
        ("host", {}, {"MinEncryptionLevel": 1}, True),
        ("host", {}, {"MinEncryptionLevel": 3}, False),
        ("client", {}, {"AllowEncryptionOracle": 0}, False),
        ("client", {}, {"AllowEncryptionOracle": 2}, True),
        ("host", {}, {"AllowEncryptionOracle": 2}, True),
        ("client", {}, {"AllowCertRevocationCheck": 0}, True),
        ("host", {}, {"SecurityLayer": 7}, True),  # not a documented value: flagged
    ],
)
def test_safe_direction_per_setting(
    role: str, before: dict[str, int], after: dict[str, int], weaker: bool
) -> None:
    found = security.judge_machine(role, _snap(**before), _snap(**after))  # type: ignore[arg-type]
    assert bool(found) == weaker, found


def _fw(*rules: dict[str, object], public_off: bool = False) -> dict[str, object]:
    profiles = {p: {"enabled": True, "default_inbound": "Block"} for p in ("Domain", "Private")}
    profiles["Public"] = {"enabled": not public_off, "default_inbound": "Block"}
    return {"registry": {}, "firewall": {"profiles": profiles, "rules": list(rules)}}


RD = {
    "name": "RemoteDesktop-UserMode-In-TCP",
    "group": "Remote Desktop",
    "local_port": "3389",
    "program": win.TS_PROGRAM,
    "profiles": ["Domain", "Private"],
}


def test_firewall_opened_to_more_profiles_is_flagged() -> None:
    wider = dict(RD, profiles=["Any"])
    found = security.judge_machine("host", _fw(RD), _fw(wider))
    assert [w.setting for w in found] == ["firewall: inbound TCP 3389"]
    assert found[0].before == "allowed on Domain, Private"
    assert found[0].after == "allowed on Domain, Private, Public"
    # the same rules, but the Public profile's firewall turned off: every port opens there
    off = security.judge_machine("host", _fw(RD), _fw(RD, public_off=True))
    assert {w.setting for w in off} >= {"firewall: inbound TCP 3389"}
    assert security.judge_machine("host", _fw(wider), _fw(RD)) == []  # narrower is fine


LAN = dict(RD, remote_address=["LocalSubnet"])


@pytest.mark.parametrize(
    ("before", "after", "weaker"),
    [
        (LAN, RD, True),  # LocalSubnet -> Any
        (RD, LAN, False),  # Any -> LocalSubnet: narrower
        (dict(RD, remote_address=["10.0.0.0/24"]), dict(RD, remote_address=["10.0.0.0/16"]), True),
        (dict(RD, remote_address=["10.0.0.0/16"]), dict(RD, remote_address=["10.0.0.7"]), False),
        (
            dict(RD, remote_address=["10.0.0.1-10.0.0.9"]),
            dict(RD, remote_address=["10.0.0.2", "10.0.0.3"]),
            False,
        ),
        (
            dict(RD, remote_address=["10.0.0.0/255.255.255.0"]),
            dict(RD, remote_address=["10.0.0.0/24", "192.168.1.5"]),  # a wider list
            True,
        ),
        (LAN, dict(RD, remote_address=["LocalSubnet", "10.0.0.5"]), True),
        (LAN, dict(RD, remote_address=["localsubnet4"]), False),  # the same keyword, IPv4 only
    ],
)
def test_firewall_opened_to_more_remote_addresses_is_flagged(
    before: dict[str, object], after: dict[str, object], weaker: bool
) -> None:
    found = security.judge_machine("host", _fw(before), _fw(after))
    assert [w.setting for w in found] == (
        ["firewall: inbound TCP 3389 remote addresses"] if weaker else []
    ), found


def test_remote_address_weakening_names_old_and_new_scope_and_source() -> None:
    found = security.judge_machine("host", _fw(LAN), _fw(RD))
    assert [(w.before, w.after) for w in found] == [
        ("from LocalSubnet on Domain, Private", "from Any on Domain, Private")
    ]
    assert "RemoteAddress" in found[0].source and "sources.md s9" in found[0].source
    # a second allow rule for the port, open to any address, widens it just the same
    extra = dict(RD, name="my-rdp-any", group="")
    found = security.judge_machine("host", _fw(LAN), _fw(LAN, extra))
    assert [w.after for w in found] == ["from Any on Domain, Private"]
    # a block rule for every address shuts the port: nothing widened
    block = dict(RD, name="block-rdp", group="", action="Block")
    assert security.judge_machine("host", _fw(LAN), _fw(RD, block)) == []


def test_reads_twin_and_facts_snapshot_shapes_alike() -> None:
    as_list = _fw(RD)
    as_dict = {**as_list, "firewall": {**as_list["firewall"], "rules": {RD["name"]: RD}}}  # type: ignore[dict-item]
    assert security.rd_exposure(as_list) == security.rd_exposure(as_dict)  # type: ignore[arg-type]


def test_policy_beats_preference_in_the_verdict() -> None:
    """Setting only the local value under a weakening policy leaves the policy in force."""
    before = {
        "registry": {win.RDP_TCP_KEY: {"UserAuthentication": {"type": "REG_DWORD", "data": 1}}}
    }
    after = {
        "registry": {
            win.RDP_TCP_KEY: {"UserAuthentication": {"type": "REG_DWORD", "data": 1}},
            win.TS_POLICY_KEY: {"UserAuthentication": {"type": "REG_DWORD", "data": 0}},
        }
    }
    for snap in (before, after):
        snap["firewall"] = {"profiles": {}, "rules": []}
    found = security.judge_machine("host", before, after)
    assert [w.setting for w in found] == ["UserAuthentication"]
    assert "[policy]" in found[0].after


def test_table_has_a_source_for_every_setting() -> None:
    for s in security.SETTINGS:
        assert re.search(r"docs/sources\.md s\d+", s.source), s.id
        assert set(s.order) <= set(s.meaning), s.id
