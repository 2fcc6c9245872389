"""A lab whose two machines are loopback WS-Management responders (pywinrm end to end).

Shared by the WinRM loopback suite and ``benchmarks/lab_matrix.py --over winrm-loopback``:
every agent call crosses real HTTP / WS-Management / pywinrm; the Windows machine behind
each responder is a twin (``rdplab.agent.emulator``), rebuilt from its baseline for each
scenario the way a snapshot restore would bring a VM back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rdplab.catalog.base import Role
from rdplab.transports.winrm import WinRMTransport
from rdplab.twin import Twin

from .loopback_lab import LoopbackLabProvider
from .wsman_responder import Responder, responder


def winrm_to(r: Responder, **kw: Any) -> WinRMTransport:
    """A transport to the responder: Basic over loopback http (or https when it has TLS)."""
    kw.setdefault("username", r.username)
    kw.setdefault("password", r.password)
    if r.scheme == "https":
        kw.setdefault("auth", "ssl")
    else:
        kw.setdefault("auth", "basic")
        kw.setdefault("allow_plaintext_basic", True)
    kw.setdefault("read_timeout", 10)
    kw.setdefault("operation_timeout", 5)
    return WinRMTransport("127.0.0.1", r.port, **kw)


class LoopbackWinRMProvider(LoopbackLabProvider):
    """Client and host are two responders; each scenario starts from fresh twins."""

    name = "winrm-loopback"
    runs_on = "loopback WS-Management responders with twins (no Windows ran)"

    def __init__(self, machines: dict[Role, Responder]) -> None:
        super().__init__(machines, {role: winrm_to(r) for role, r in machines.items()})
        self.responders = machines

    def put_twin(self, role: Role, twin: Twin) -> None:
        self.responders[role].twin = twin

    def twin_of(self, role: Role) -> Twin:
        twin: Twin = self.responders[role].twin
        return twin

    def wire_commands(self) -> dict[Role, int]:
        """Commands each responder answered since the last reset (counted on the wire)."""
        return {role: r.command_count for role, r in self.responders.items()}


def add_latency(r: Responder, seconds: float) -> None:
    """Every command the responder answers takes ``seconds`` longer (a real network and a
    real PowerShell start-up stand-in for the benchmark's ``--latency-ms``)."""
    original = r.execute

    def execute(line: str, stdin: bytes) -> tuple[int, bytes, bytes]:
        time.sleep(seconds)
        return original(line, stdin)

    r.execute = execute  # type: ignore[method-assign]


@contextmanager
def winrm_lab(latency_s: float = 0.0) -> Iterator[LoopbackWinRMProvider]:
    with responder(computer_name="CLIENT") as client, responder() as host:
        if latency_s:
            add_latency(client, latency_s)
            add_latency(host, latency_s)
        provider = LoopbackWinRMProvider({"client": client, "host": host})
        try:
            yield provider
        finally:
            provider.close()
