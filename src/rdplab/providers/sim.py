"""The embedded sim provider: twins built from baselines, reset by rebuilding them."""

from __future__ import annotations

from rdplab.backends.base import CallLog
from rdplab.backends.sim import SimBackend
from rdplab.baselines import BASELINE_DIR, build_twin
from rdplab.catalog.base import ROLES, Role
from rdplab.connection import ConnectionResult, connect
from rdplab.lab import Scenario
from rdplab.providers.base import LabMachines, Provider
from rdplab.twin import Twin


def scenario_twin(scenario: Scenario, role: Role) -> Twin:
    """A fresh twin of the scenario's machine in ``role``, on the lab network: its DNS
    server answers the lab's zone and only the lab's PKI server answers HTTP."""
    twin = build_twin(
        scenario.baselines[role],
        scenario.computer_names[role],
        scenario.baseline_search or (BASELINE_DIR,),
    )
    twin.zone = scenario.network.zone
    twin.http_reach = scenario.network.pki_address.__eq__
    return twin


class SimProvider(Provider):
    name = "sim"
    runs_on = "in-process Windows twins (simulated; no Windows machine ran)"
    always_restore = True  # a fresh twin costs microseconds: every scenario gets one

    def reset(self, scenario: Scenario) -> LabMachines:
        self.to_restore(scenario)
        calls = CallLog()
        twins = {role: scenario_twin(scenario, role) for role in ROLES}
        return LabMachines(
            SimBackend("client", twins["client"], calls),
            SimBackend("host", twins["host"], calls),
            calls,
        )

    def connect(self, scenario: Scenario, machines: LabMachines) -> ConnectionResult:
        client, host = machines.client, machines.host
        assert isinstance(client, SimBackend) and isinstance(host, SimBackend)
        return connect(client.twin, host.twin, scenario.network)
