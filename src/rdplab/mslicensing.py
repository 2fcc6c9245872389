"""Health of the client's RDS licensing store, HKLM\\SOFTWARE\\Microsoft\\MSLicensing.

There is no documented checker for this key, so rdplab uses a structural rule (the
agent applies the same one): the key may be absent (the client recreates it on its next
elevated run); when present it needs a HardwareID subkey whose ClientHWID is a 20-byte
REG_BINARY (the CLIENT_HARDWARE_ID structure of [MS-RDPELE] 2.2.2.3.1 is 20 bytes) and a
Store subkey. Anything else counts as corrupt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rdplab import windows as win

HWID_BYTES = 20

KeyView = Mapping[str, Mapping[str, Any]]  # key path (any case) -> {"values": ..., "subkeys": ...}


def problems(keys: KeyView) -> list[str]:
    """What is wrong with MSLicensing; [] when healthy or absent."""
    low = {k.lower(): v for k, v in keys.items()}
    root = low.get(win.MSLICENSING_KEY.lower())
    if root is None:
        return []
    found = []
    hwid_key = low.get((win.MSLICENSING_KEY + r"\HardwareID").lower())
    if hwid_key is None:
        found.append("HardwareID subkey missing")
    else:
        values = {n.lower(): v for n, v in hwid_key.get("values", {}).items()}
        hwid = values.get("clienthwid")
        if hwid is None:
            found.append("HardwareID\\ClientHWID missing")
        elif hwid["type"] != "REG_BINARY":
            found.append(f"HardwareID\\ClientHWID is {hwid['type']}, not REG_BINARY")
        elif len(bytes.fromhex(hwid["data"])) != HWID_BYTES:
            found.append(
                f"HardwareID\\ClientHWID is {len(bytes.fromhex(hwid['data']))} bytes,"
                f" not {HWID_BYTES}"
            )
    if (win.MSLICENSING_KEY + r"\Store").lower() not in low:
        found.append("Store subkey missing")
    return found
