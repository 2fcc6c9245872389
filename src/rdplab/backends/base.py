"""What every backend offers, and the call log that counts remote round trips."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from typing import Any

from rdplab.errors import BackendError
from rdplab.facts import Facts
from rdplab.ops import BatchResult, Op


class CallLog:
    """Counts calls per (machine, phase). The budget is one per machine per phase."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.phase = "setup"

    def record(self, machine: str) -> None:
        self.counts[(machine, self.phase)] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def max_per_machine_phase(self) -> int:
        return max(self.counts.values(), default=0)

    def to_json(self) -> dict[str, int]:
        return {f"{m}/{p}": n for (m, p), n in sorted(self.counts.items())}


class Backend(ABC):
    """One machine. ``apply`` and ``gather`` are one call each."""

    def __init__(self, role: str, calls: CallLog) -> None:
        self.role = role
        self.calls = calls

    @abstractmethod
    def apply(self, ops: list[Op]) -> BatchResult: ...

    @abstractmethod
    def gather(self, request: dict[str, Any] | None = None) -> Facts: ...

    #: Whether ``run_script`` can run Windows PowerShell here (real machines only).
    runs_powershell = False

    def run_script(self, script: str, parameters: tuple[str, ...] = ()) -> BatchResult:
        """Run a Windows PowerShell script (a scenario's script fix, an exported remediation
        script) on the machine in ONE call, with these switch parameters (``-WhatIf``)."""
        raise BackendError(self.role, "this machine runs no PowerShell")

    def snapshot(self) -> dict[str, Any]:
        """State for the no-collateral diff: the facts (one call), in the twin's snapshot
        shape (``Twin.snapshot``), so the faults' ``leaves`` patterns fit every provider."""
        return snapshot_from_facts(self.gather({"ip": ["ipv4"]}).raw)


def snapshot_from_facts(raw: dict[str, Any]) -> dict[str, Any]:
    """The persistent part of a facts document, shaped like ``Twin.snapshot``: registry
    values directly under their key (a key's subkey list follows from the keys themselves),
    certificate stores under ``stores``, the hosts file and the CredSSP package version at
    the top. Probes and the DNS cache are volatile and left out."""
    registry = {
        key: dict(entry.get("values") or {})
        for key, entry in (raw.get("registry") or {}).items()
        if isinstance(entry, dict)
    }
    return {
        "computer": raw.get("computer"),
        "registry": registry,
        "firewall": raw.get("firewall"),
        "services": raw.get("services"),
        "certificates": {"stores": raw.get("certificates")},
        "hosts": (raw.get("dns") or {}).get("hosts"),
        "hotfixes": raw.get("hotfixes"),
        "tspkg_version": (raw.get("credssp") or {}).get("tspkg_version"),
        **({"ip": raw["ip"]} if (raw.get("ip") or {}).get("interfaces") else {}),
    }
