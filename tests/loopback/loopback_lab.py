"""What the loopback lab providers share: two loopback machines (WinRM responders or sshd
servers) with twins behind them, one transport per machine opened once, the agent
installed once, and fresh twins from the scenario's baselines at every reset (as a
snapshot restore would bring a VM back). Subclasses say how a machine holds its twin."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from rdplab.backends.agent import AgentBackend
from rdplab.backends.base import CallLog
from rdplab.catalog.base import ROLES, Role
from rdplab.connection import ConnectionResult, connect
from rdplab.lab import Scenario
from rdplab.providers.base import LabMachines, Provider
from rdplab.providers.sim import scenario_twin
from rdplab.transports.base import Transport
from rdplab.twin import Twin


class LoopbackLabProvider(Provider):
    def __init__(self, machines: dict[Role, Any], transports: dict[Role, Transport]) -> None:
        self.machines = machines
        self.transports = transports
        for role, t in transports.items():  # the agent is installed once per machine
            machines[role].install_agent()
            t.open()
            assert AgentBackend(role, t, CallLog()).ensure_agent() == "agent current"

    @abstractmethod
    def put_twin(self, role: Role, twin: Twin) -> None: ...

    @abstractmethod
    def twin_of(self, role: Role) -> Twin: ...

    def reset(self, scenario: Scenario) -> LabMachines:
        calls = CallLog()
        todo = self.to_restore(scenario)  # the cheaper-reset rule, as on real machines
        for role in ROLES:
            if role in todo:
                self.put_twin(role, scenario_twin(scenario, role))
            self.machines[role].reset_counters()
        return LabMachines(
            AgentBackend("client", self.transports["client"], calls),
            AgentBackend("host", self.transports["host"], calls),
            calls,
        )

    def connect(self, scenario: Scenario, machines: LabMachines) -> ConnectionResult:
        return connect(self.twin_of("client"), self.twin_of("host"), scenario.network)

    def close(self) -> None:
        for t in self.transports.values():
            t.close()
