"""Registry twin: case folding, typed values, changed flags, delete, export/restore, snapshot."""

from __future__ import annotations

import pytest

from rdplab.errors import OpError
from rdplab.twin.registry import Registry, check_value, normalize_key

TS = r"HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server"


@pytest.fixture
def reg() -> Registry:
    r = Registry()
    r.set(TS, "fDenyTSConnections", "REG_DWORD", 0)
    r.set(TS + r"\WinStations\RDP-Tcp", "PortNumber", "REG_DWORD", 3389)
    r.set(TS + r"\WinStations\RDP-Tcp", "SecurityLayer", "REG_DWORD", 2)
    return r


# -- key paths ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "want"),
    [
        (r"HKEY_LOCAL_MACHINE\SOFTWARE\X", r"HKLM\SOFTWARE\X"),
        (r"hklm\SOFTWARE\X\\", r"HKLM\SOFTWARE\X"),
        ("HKLM/SOFTWARE/X", r"HKLM\SOFTWARE\X"),
        (r"hkey_current_user\Software", r"HKCU\Software"),
    ],
)
def test_normalize_key(given: str, want: str) -> None:
    assert normalize_key(given) == want


@pytest.mark.parametrize("bad", ["", "\\\\", r"HKCR\.txt", r"SOFTWARE\Microsoft"])
def test_normalize_key_rejects_bad_hive_or_empty(bad: str) -> None:
    with pytest.raises(OpError):
        normalize_key(bad)


def test_keys_and_value_names_are_case_insensitive(reg: Registry) -> None:
    v = reg.get(TS.upper(), "fdenytsconnections")
    assert v is not None and v.data == 0 and v.name == "fDenyTSConnections"
    assert reg.get(
        r"hkey_local_machine\system\currentcontrolset\control\terminal server", "FDENYTSCONNECTIONS"
    )
    # the spelling first used is kept for display
    key = reg.key(TS.lower())
    assert key is not None and key.path == TS


def test_setting_with_other_case_updates_the_same_value(reg: Registry) -> None:
    assert reg.set(TS.lower(), "FDENYTSCONNECTIONS", "REG_DWORD", 1) is True
    key = reg.key(TS)
    assert key is not None and len(key.values) == 1
    assert reg.get(TS, "fDenyTSConnections").data == 1  # type: ignore[union-attr]


def test_subkeys_are_immediate_children_only(reg: Registry) -> None:
    assert reg.subkeys(TS) == ["WinStations"]
    assert reg.subkeys(TS.lower() + r"\winstations") == ["RDP-Tcp"]
    assert reg.subkeys(TS + r"\WinStations\RDP-Tcp") == []


# -- types ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "data", "stored"),
    [
        ("REG_DWORD", 0, 0),
        ("REG_DWORD", 2**32 - 1, 2**32 - 1),
        ("REG_QWORD", 2**64 - 1, 2**64 - 1),
        ("REG_SZ", "", ""),
        ("REG_EXPAND_SZ", "%SystemRoot%", "%SystemRoot%"),
        ("REG_MULTI_SZ", ["a", "b"], ["a", "b"]),
        ("REG_MULTI_SZ", [], []),
        ("REG_BINARY", "DEADBEEF", "deadbeef"),
        ("REG_BINARY", "de ad be ef", "deadbeef"),
        ("REG_BINARY", "", ""),
    ],
)
def test_check_value_accepts(kind: str, data: object, stored: object) -> None:
    assert check_value(kind, data, "here") == stored


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("REG_DWORD", 2**32),
        ("REG_DWORD", -1),
        ("REG_DWORD", True),
        ("REG_DWORD", False),
        ("REG_DWORD", "1"),
        ("REG_DWORD", 1.0),
        ("REG_QWORD", 2**64),
        ("REG_QWORD", True),
        ("REG_SZ", 1),
        ("REG_EXPAND_SZ", ["x"]),
        ("REG_MULTI_SZ", "a"),
        ("REG_MULTI_SZ", ["a", 1]),
        ("REG_BINARY", "xyz"),
        ("REG_BINARY", "abc"),  # odd number of digits
        ("REG_BINARY", 255),
        ("REG_NONE", "x"),
        ("reg_dword", 1),
    ],
)
def test_check_value_rejects(kind: str, data: object) -> None:
    with pytest.raises(OpError) as exc:
        check_value(kind, data, r"HKLM\X\Val")
    assert r"HKLM\X\Val" in str(exc.value)


def test_multi_sz_is_stored_as_a_copy() -> None:
    reg = Registry()
    data = ["a", "b"]
    reg.set(r"HKLM\X", "m", "REG_MULTI_SZ", data)
    data.append("c")
    assert reg.get(r"HKLM\X", "m").data == ["a", "b"]  # type: ignore[union-attr]


def test_bad_value_leaves_registry_untouched() -> None:
    reg = Registry()
    with pytest.raises(OpError):
        reg.set(r"HKLM\New\Key", "v", "REG_DWORD", True)
    assert reg.key(r"HKLM\New\Key") is None
    assert reg.snapshot() == {}


# -- changed flag ---------------------------------------------------------------------------
def test_set_reports_change_and_is_idempotent() -> None:
    reg = Registry()
    assert reg.set(r"HKLM\X", "v", "REG_DWORD", 1) is True
    assert reg.set(r"HKLM\X", "v", "REG_DWORD", 1) is False
    assert reg.set(r"hklm\x", "V", "REG_DWORD", 1) is False
    assert reg.set(r"HKLM\X", "v", "REG_DWORD", 2) is True
    # same data, another type: a change
    assert reg.set(r"HKLM\X", "v", "REG_QWORD", 2) is True
    assert reg.get(r"HKLM\X", "v").type == "REG_QWORD"  # type: ignore[union-attr]


def test_binary_set_compares_canonical_hex() -> None:
    reg = Registry()
    assert reg.set(r"HKLM\X", "b", "REG_BINARY", "0A0B") is True
    assert reg.set(r"HKLM\X", "b", "REG_BINARY", "0a0b") is False


# -- delete ---------------------------------------------------------------------------------
def test_delete_value_keeps_key_and_siblings(reg: Registry) -> None:
    rdp = TS + r"\WinStations\RDP-Tcp"
    assert reg.delete_value(rdp, "portnumber") is True
    assert reg.get(rdp, "PortNumber") is None
    assert reg.get(rdp, "SecurityLayer") is not None
    assert reg.delete_value(rdp, "PortNumber") is False
    assert reg.delete_value(r"HKLM\Nope", "x") is False


def test_delete_key_removes_whole_tree_but_not_prefix_siblings(reg: Registry) -> None:
    reg.set(TS + "Extra", "v", "REG_SZ", "sibling with a common prefix")
    assert reg.delete_key(TS + r"\WinStations") is True
    assert reg.key(TS + r"\WinStations") is None
    assert reg.key(TS + r"\WinStations\RDP-Tcp") is None
    assert reg.get(TS, "fDenyTSConnections") is not None
    assert reg.get(TS + "Extra", "v") is not None
    assert reg.delete_key(TS + r"\WinStations") is False


# -- export / restore -----------------------------------------------------------------------
def test_export_restore_round_trip(reg: Registry) -> None:
    saved = reg.export(TS)
    before = reg.snapshot()
    assert set(saved) == {TS, TS + r"\WinStations", TS + r"\WinStations\RDP-Tcp"}
    assert saved[TS]["fDenyTSConnections"] == {"type": "REG_DWORD", "data": 0}

    reg.set(TS, "fDenyTSConnections", "REG_DWORD", 1)
    reg.set(TS + r"\New\Sub", "x", "REG_SZ", "added")
    reg.delete_value(TS + r"\WinStations\RDP-Tcp", "PortNumber")
    reg.restore(saved, TS)

    assert reg.snapshot() == before
    assert reg.key(TS + r"\New") is None
    assert reg.export(TS) == saved


def test_restore_recreates_a_deleted_tree(reg: Registry) -> None:
    before = reg.snapshot()
    saved = reg.export(TS + r"\WinStations")
    reg.delete_key(TS + r"\WinStations")
    reg.restore(saved, TS + r"\WinStations")
    assert reg.snapshot() == before


def test_restore_of_empty_export_deletes(reg: Registry) -> None:
    saved = reg.export(r"HKLM\Absent")
    assert saved == {}
    reg.set(r"HKLM\Absent", "v", "REG_SZ", "created later")
    reg.restore(saved, r"HKLM\Absent")
    assert reg.key(r"HKLM\Absent") is None


def test_export_is_a_deep_copy() -> None:
    reg = Registry()
    reg.set(r"HKLM\X", "m", "REG_MULTI_SZ", ["a"])
    saved = reg.export(r"HKLM\X")
    saved[r"HKLM\X"]["m"]["data"].append("b")
    assert reg.get(r"HKLM\X", "m").data == ["a"]  # type: ignore[union-attr]


# -- snapshot -------------------------------------------------------------------------------
def test_snapshot_leaves_out_pure_intermediate_keys(reg: Registry) -> None:
    reg.create_key(r"HKLM\SOFTWARE\Policies\Empty")  # empty leaf: kept
    snap = reg.snapshot()
    assert TS in snap  # has a value and children: kept
    assert TS + r"\WinStations" not in snap  # no values, only a child: structure
    assert r"HKLM\SYSTEM" not in snap
    assert snap[r"HKLM\SOFTWARE\Policies\Empty"] == {}
    assert r"HKLM\SOFTWARE\Policies" not in snap
    assert list(snap[TS + r"\WinStations\RDP-Tcp"]) == ["PortNumber", "SecurityLayer"]


def test_snapshot_does_not_alias_values() -> None:
    reg = Registry()
    reg.set(r"HKLM\X", "m", "REG_MULTI_SZ", ["a"])
    snap = reg.snapshot()
    snap[r"HKLM\X"]["m"]["data"].append("b")
    assert reg.get(r"HKLM\X", "m").data == ["a"]  # type: ignore[union-attr]


def test_from_json_validates_types() -> None:
    reg = Registry.from_json({r"HKLM\A": {"v": {"type": "REG_DWORD", "data": 5}}, r"HKLM\B": {}})
    assert reg.get(r"HKLM\A", "V").data == 5  # type: ignore[union-attr]
    assert reg.key(r"HKLM\B") is not None
    with pytest.raises(OpError):
        Registry.from_json({r"HKLM\A": {"v": {"type": "REG_DWORD", "data": -5}}})
