"""The no-collateral check: flatten, diff (with the empty-key rule) and allowed patterns."""

from __future__ import annotations

import pytest

from rdplab import windows as win
from rdplab.baselines import build_twin
from rdplab.ops import Op
from rdplab.scenario import allowed, diff, flatten


def test_flatten_nested_dicts_and_lists_of_dicts() -> None:
    data = {
        "a": {"b": 1, "c": {"d": [1, 2]}},
        "rules": [{"name": "x"}, {"name": "y"}],
        "empty": {},
        "nolist": [],
    }
    assert flatten(data) == {
        "a/b": 1,
        "a/c/d": [1, 2],
        "rules/0/name": "x",
        "rules/1/name": "y",
        "empty": {},
        "nolist": [],
    }


def test_flatten_mixed_list_is_a_leaf() -> None:
    assert flatten({"l": [{"a": 1}, 2]}) == {"l": [{"a": 1}, 2]}


def test_diff_reports_changed_added_removed_leaves_sorted() -> None:
    before = {"x": {"a": 1, "b": 2, "gone": 3}}
    after = {"x": {"a": 1, "b": 5, "new": 4}}
    assert diff(before, after) == [("x/b", 2, 5), ("x/gone", 3, None), ("x/new", None, 4)]
    assert diff(before, before) == []


def test_empty_key_gaining_children_is_not_a_change_of_its_own() -> None:
    before = {"registry": {r"HKLM\P": {}}}
    after = {"registry": {r"HKLM\P": {"v": {"type": "REG_DWORD", "data": 1}}}}
    assert diff(before, after) == [
        (r"registry/HKLM\P/v/data", None, 1),
        (r"registry/HKLM\P/v/type", None, "REG_DWORD"),
    ]
    # and the reverse: losing its last child
    assert [c[0] for c in diff(after, before)] == [
        r"registry/HKLM\P/v/data",
        r"registry/HKLM\P/v/type",
    ]


def test_empty_key_replaced_by_a_subkey_is_not_a_change() -> None:
    # the registry snapshot drops a value-less key once it has a subkey
    before = {"registry": {r"HKLM\P": {}}}
    after = {"registry": {r"HKLM\P\Sub": {"v": {"type": "REG_SZ", "data": "x"}}}}
    paths = [c[0] for c in diff(before, after)]
    assert r"registry/HKLM\P" not in paths
    assert paths == [r"registry/HKLM\P\Sub/v/data", r"registry/HKLM\P\Sub/v/type"]


def test_empty_key_vanishing_without_children_is_a_change() -> None:
    assert diff({"registry": {r"HKLM\P": {}}}, {"registry": {}}) == [
        (r"registry/HKLM\P", {}, None),
    ]
    # a sibling with a common prefix is not a child
    assert diff({"registry": {r"HKLM\P": {}}}, {"registry": {r"HKLM\PX": {}}}) == [
        (r"registry/HKLM\P", {}, None),
        (r"registry/HKLM\PX", None, {}),
    ]


def test_diff_on_twin_snapshots() -> None:
    twin = build_twin("windows-server-2022", "HOST")
    before = twin.snapshot()
    twin.apply(
        [
            Op(
                "reg.set",
                {"key": win.TS_POLICY_KEY, "name": "SecurityLayer", "type": "REG_DWORD", "data": 0},
            ),
            Op("fw.rule.set", {"match": {"name": "RemoteDesktop-In-TCP-WS"}, "enabled": False}),
            Op("dns.cache.seed", {"name": "x", "address": "1.2.3.4"}),
        ]
    )
    changes = diff(before, twin.snapshot())
    policy = "registry/" + win.TS_POLICY_KEY
    assert [c[0] for c in changes] == [
        "firewall/rules/RemoteDesktop-In-TCP-WS/enabled",
        policy + "/SecurityLayer/data",
        policy + "/SecurityLayer/type",
    ]
    assert changes[0][1:] == (True, False)


REVOCATION_LEAVE = r"client:registry/*Terminal Services\Client/AllowCertRevocationCheck/*"


@pytest.mark.parametrize(
    ("path", "patterns", "ok"),
    [
        ("client:hosts/pki.rdplab.test", ["client:hosts/pki.rdplab.test"], True),
        ("client:hosts/PKI.rdplab.test", ["CLIENT:HOSTS/pki.rdplab.test"], True),
        ("host:certificates/Remote Desktop/0/thumbprint", ["host:certificates/*"], True),
        ("client:certificates/Remote Desktop/0/thumbprint", ["host:certificates/*"], False),
        (
            f"client:registry/{win.TS_CLIENT_POLICY_KEY}/AllowCertRevocationCheck/data",
            [REVOCATION_LEAVE],
            True,
        ),
        (
            f"client:registry/{win.TS_POLICY_KEY}/AllowCertRevocationCheck/data",
            [REVOCATION_LEAVE],
            False,
        ),
        ("host:hotfixes", ["host:hotfixes*"], True),
        ("host:tspkg_version", ["host:hotfixes*"], False),
        ("host:x", [], False),
        ("host:ab", ["host:a?"], True),
    ],
)
def test_allowed_is_case_insensitive_fnmatch(path: str, patterns: list[str], ok: bool) -> None:
    assert allowed(path, patterns) is ok
