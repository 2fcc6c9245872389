"""The embedded sim provider: twins built from baselines, reset by rebuilding them."""

from __future__ import annotations

from rdplab.backends.base import CallLog
from rdplab.backends.sim import SimBackend
from rdplab.baselines import BASELINE_DIR, build_twin
from rdplab.connection import ConnectionResult, connect
from rdplab.lab import Scenario
from rdplab.providers.base import LabMachines, Provider


class SimProvider(Provider):
    name = "sim"
    runs_on = "in-process Windows twins (simulated; no Windows machine ran)"

    def reset(self, scenario: Scenario) -> LabMachines:
        calls = CallLog()
        net = scenario.network
        twins = {
            role: build_twin(
                scenario.baselines[role],
                scenario.computer_names[role],
                scenario.baseline_search or (BASELINE_DIR,),
            )
            for role in ("client", "host")
        }
        for twin in twins.values():
            twin.zone = net.zone
            twin.http_reach = net.pki_address.__eq__
        return LabMachines(
            SimBackend("client", twins["client"], calls),
            SimBackend("host", twins["host"], calls),
            calls,
        )

    def connect(self, scenario: Scenario, machines: LabMachines) -> ConnectionResult:
        client, host = machines.client, machines.host
        assert isinstance(client, SimBackend) and isinstance(host, SimBackend)
        return connect(client.twin, host.twin, scenario.network)
