"""A lab whose two machines are loopback WS-Management responders (pywinrm end to end).

Shared by the WinRM loopback suite and ``benchmarks/lab_matrix.py --over winrm-loopback``:
every agent call crosses real HTTP / WS-Management / pywinrm; the Windows machine behind
each responder is a twin (``rdplab.agent.emulator``), rebuilt from its baseline for each
scenario the way a snapshot restore would bring a VM back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rdplab.backends.agent import AgentBackend
from rdplab.backends.base import CallLog
from rdplab.catalog.base import ROLES, Role
from rdplab.connection import ConnectionResult, connect
from rdplab.lab import Scenario
from rdplab.providers.base import LabMachines, Provider
from rdplab.providers.sim import scenario_twin
from rdplab.transports.winrm import WinRMTransport

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


class LoopbackWinRMProvider(Provider):
    """Client and host are two responders; each scenario starts from fresh twins."""

    name = "winrm-loopback"
    runs_on = "loopback WS-Management responders with twins (no Windows ran)"

    def __init__(self, machines: dict[Role, Responder]) -> None:
        self.responders = machines
        self.transports = {role: winrm_to(r) for role, r in machines.items()}
        for role, t in self.transports.items():  # the agent is installed once per machine
            machines[role].install_agent()
            t.open()
            assert AgentBackend(role, t, CallLog()).ensure_agent() == "agent current"

    def reset(self, scenario: Scenario) -> LabMachines:
        calls = CallLog()
        for role in ROLES:
            twin = scenario_twin(scenario, role)
            self.responders[role].twin = twin
            self.responders[role].reset_counters()
        return LabMachines(
            AgentBackend("client", self.transports["client"], calls),
            AgentBackend("host", self.transports["host"], calls),
            calls,
        )

    def connect(self, scenario: Scenario, machines: LabMachines) -> ConnectionResult:
        return connect(
            self.responders["client"].twin, self.responders["host"].twin, scenario.network
        )

    def wire_commands(self) -> dict[Role, int]:
        """Commands each responder answered since the last reset (counted on the wire)."""
        return {role: r.command_count for role, r in self.responders.items()}

    def close(self) -> None:
        for t in self.transports.values():
            t.close()


@contextmanager
def winrm_lab() -> Iterator[LoopbackWinRMProvider]:
    with responder(computer_name="CLIENT") as client, responder() as host:
        provider = LoopbackWinRMProvider({"client": client, "host": host})
        try:
            yield provider
        finally:
            provider.close()
