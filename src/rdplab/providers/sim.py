"""The embedded sim provider: twins built from baselines, reset by rebuilding them."""

from __future__ import annotations

from rdplab.backends.base import CallLog
from rdplab.backends.router_sim import SimRouterBackend
from rdplab.backends.sim import SimBackend
from rdplab.baselines import BASELINE_DIR, build_twin
from rdplab.catalog.base import ROLES, Role
from rdplab.connection import ConnectionResult, connect
from rdplab.lab import Scenario
from rdplab.providers.base import LabMachines, Provider
from rdplab.twin import Twin
from rdplab.twin.ip import IpConfig
from rdplab.twin.router import Forward, RouterTwin


def scenario_router(scenario: Scenario) -> RouterTwin | None:
    """The lab's router at its healthy state: its addresses, and a forward of the RDP port
    to the host (what the article's set-up leaves), MTU 1500, ICMP passing, no clamp."""
    net = scenario.network
    if net.router is None:
        return None
    r = net.router
    port = net.target_port
    return RouterTwin(
        lan_address=r.lan_address,
        outside_address=r.outside_address,
        forwards={port: Forward(port, net.host_address, port)},
    )


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
    # one "Ethernet" interface, DHCP on, holding the role's lab address
    net = scenario.network
    twin.ip = IpConfig.lab_default(net.host_address if role == "host" else net.client_address)
    return twin


class SimProvider(Provider):
    name = "sim"
    runs_on = "in-process Windows twins (simulated; no Windows machine ran)"
    always_restore = True  # a fresh twin costs microseconds: every scenario gets one

    def reset(self, scenario: Scenario) -> LabMachines:
        self.to_restore(scenario)
        calls = CallLog()
        twins = {role: scenario_twin(scenario, role) for role in ROLES}
        router = scenario_router(scenario)
        return LabMachines(
            SimBackend("client", twins["client"], calls),
            SimBackend("host", twins["host"], calls),
            calls,
            SimRouterBackend(router, calls) if router is not None else None,
        )

    def connect(self, scenario: Scenario, machines: LabMachines) -> ConnectionResult:
        client, host, router = machines.client, machines.host, machines.router
        assert isinstance(client, SimBackend) and isinstance(host, SimBackend)
        twin = router.twin if isinstance(router, SimRouterBackend) else None
        return connect(client.twin, host.twin, scenario.network, router=twin)
