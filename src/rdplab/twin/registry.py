"""Registry twin: case-insensitive keys, typed values, export-style backups.

Keys are stored flat by full path (``HKLM\\SOFTWARE\\...``); lookups fold case as
Windows does, while the spelling first used is kept for display.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from rdplab.errors import OpError
from rdplab.ops import REG_TYPES

_HIVES = {"HKEY_LOCAL_MACHINE": "HKLM", "HKEY_CURRENT_USER": "HKCU"}


def normalize_key(path: str) -> str:
    """Canonical spelling of a key path: HKLM prefix, backslashes, no trailing slash."""
    parts = [p for p in path.replace("/", "\\").split("\\") if p]
    if not parts:
        raise OpError("empty registry key path")
    hive = _HIVES.get(parts[0].upper(), parts[0].upper())
    if hive not in ("HKLM", "HKCU"):
        raise OpError(f"registry key {path!r}: hive must be HKLM or HKCU")
    return "\\".join([hive, *parts[1:]])


def check_value(kind: str, data: Any, where: str) -> Any:
    """Validate data against its registry type; return the stored form."""
    if kind not in REG_TYPES:
        raise OpError(f"{where}: unknown registry type {kind!r}")
    if kind in ("REG_DWORD", "REG_QWORD"):
        limit = 2**32 if kind == "REG_DWORD" else 2**64
        if isinstance(data, bool) or not isinstance(data, int) or not 0 <= data < limit:
            raise OpError(f"{where}: {kind} needs an integer in [0, {limit})")
        return data
    if kind in ("REG_SZ", "REG_EXPAND_SZ"):
        if not isinstance(data, str):
            raise OpError(f"{where}: {kind} needs a string")
        return data
    if kind == "REG_MULTI_SZ":
        if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
            raise OpError(f"{where}: REG_MULTI_SZ needs a list of strings")
        return list(data)
    # REG_BINARY travels as lowercase hex
    if not isinstance(data, str):
        raise OpError(f"{where}: REG_BINARY needs a hex string")
    try:
        return bytes.fromhex(data).hex()
    except ValueError:
        raise OpError(f"{where}: REG_BINARY data is not hex") from None


@dataclass
class RegValue:
    name: str
    type: str
    data: Any

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "data": copy.deepcopy(self.data)}


@dataclass
class RegKey:
    path: str
    values: dict[str, RegValue] = field(default_factory=dict)  # lower name -> value


class Registry:
    def __init__(self) -> None:
        self._keys: dict[str, RegKey] = {}

    # -- reading ---------------------------------------------------------------------------
    def key(self, path: str) -> RegKey | None:
        return self._keys.get(normalize_key(path).lower())

    def get(self, path: str, name: str) -> RegValue | None:
        key = self.key(path)
        return None if key is None else key.values.get(name.lower())

    def subkeys(self, path: str) -> list[str]:
        prefix = normalize_key(path).lower() + "\\"
        names = {
            k.path[len(prefix) :].split("\\")[0]
            for low, k in self._keys.items()
            if low.startswith(prefix)
        }
        return sorted(names, key=str.lower)

    def tree(self, path: str) -> list[RegKey]:
        """The key and all keys below it."""
        low = normalize_key(path).lower()
        return [k for p, k in sorted(self._keys.items()) if p == low or p.startswith(low + "\\")]

    def export(self, path: str) -> dict[str, Any]:
        """A reg-export-like dump of a key tree (the twin's backup format)."""
        return {k.path: {v.name: v.to_json() for v in k.values.values()} for k in self.tree(path)}

    # -- changing --------------------------------------------------------------------------
    def create_key(self, path: str) -> RegKey:
        norm = normalize_key(path)
        parts = norm.split("\\")
        key: RegKey | None = None
        for i in range(2, len(parts) + 1):
            sub = "\\".join(parts[:i])
            key = self._keys.get(sub.lower())
            if key is None:
                key = self._keys[sub.lower()] = RegKey(sub)
        assert key is not None
        return key

    def set(self, path: str, name: str, kind: str, data: Any) -> bool:
        """Set a value; return True when something changed."""
        stored = check_value(kind, data, f"{normalize_key(path)}\\{name}")
        current = self.get(path, name)
        if current is not None and current.type == kind and current.data == stored:
            return False
        key = self.create_key(path)
        key.values[name.lower()] = RegValue(name, kind, stored)
        return True

    def delete_value(self, path: str, name: str) -> bool:
        key = self.key(path)
        if key is None or name.lower() not in key.values:
            return False
        del key.values[name.lower()]
        return True

    def delete_key(self, path: str) -> bool:
        doomed = [k.path.lower() for k in self.tree(path)]
        for low in doomed:
            del self._keys[low]
        return bool(doomed)

    def restore(self, backup: dict[str, Any], path: str) -> None:
        """Put a key tree back exactly as ``export`` saw it."""
        self.delete_key(path)
        for key_path, values in backup.items():
            key = self.create_key(key_path)
            for name, v in values.items():
                key.values[name.lower()] = RegValue(name, v["type"], copy.deepcopy(v["data"]))

    # -- snapshot --------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Every key with its values. Keys that only lead to other keys (no values of their
        own) are structure, not settings, and are left out."""
        parents = {low.rsplit("\\", 1)[0] for low in self._keys}
        return {
            k.path: {v.name: v.to_json() for v in sorted(k.values.values(), key=lambda v: v.name)}
            for low, k in sorted(self._keys.items())
            if k.values or low not in parents
        }

    @classmethod
    def from_json(cls, data: dict[str, dict[str, dict[str, Any]]]) -> Registry:
        reg = cls()
        for path, values in data.items():
            reg.create_key(path)
            for name, v in (values or {}).items():
                if not isinstance(v, dict) or set(v) != {"type", "data"}:
                    raise OpError(f"{path}\\{name}: a value needs exactly 'type' and 'data'")
                reg.set(path, name, v["type"], v["data"])
        return reg
