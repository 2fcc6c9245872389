"""The fault catalog. A new fault is one module in this package plus one line below."""

from __future__ import annotations

import difflib
from functools import cache
from importlib import import_module

from rdplab.catalog.base import DetectContext, Fault, Finding
from rdplab.errors import UnknownFaultError

FAULT_MODULES = (
    "firewall_blocked",
    "firewall_websocket_blocked",
    "credssp_oracle_mismatch",
    "rdp_cert_corrupt",
    "licensing_cache_stale",
    "dns_stale_record",
    "cert_revocation_unreachable",
    "rdp_disabled",
    "listener_port_changed",
    "termservice_stopped",
    "security_layer_mismatch",
    "port_forward_missing",
    "port_forward_stale",
    "vpn_mtu_blackhole",
)


@cache
def catalog() -> dict[str, Fault]:
    faults: dict[str, Fault] = {}
    for name in FAULT_MODULES:
        fault: Fault = import_module(f"rdplab.catalog.{name}").FAULT
        faults[fault.id] = fault
    return faults


def get(fault_id: str) -> Fault:
    try:
        return catalog()[fault_id]
    except KeyError:
        close = difflib.get_close_matches(fault_id, list(catalog()), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownFaultError(
            f"unknown fault id {fault_id!r} ({hint}known: {', '.join(sorted(catalog()))})"
        ) from None


def detect_all(ctx: DetectContext) -> list[Finding]:
    """Run every detector; findings sorted by fault and role."""
    found = [f for fault in catalog().values() for f in fault.detect(ctx)]
    return sorted(found, key=lambda f: (f.fault, f.role))


__all__ = ["FAULT_MODULES", "Fault", "Finding", "catalog", "detect_all", "get"]
