"""Exercises over the real network: ``rdplab exercise new --network`` keeps the drawn
exercise's network up as namespaces (``rdplab serve --network``'s work), the trainee looks
and repairs with real tools (``rdplab netlab shell client|router``), and ``rdplab exercise
check --network`` grades the repair from the router's real state (its nftables rules and
links, read back by ``rdplab.netlab.router_state``) and a real connection attempt from the
client's namespace. The Windows machines stay the exercise's broken twins: a shell cannot
change them, so causes on them stay broken unless the network hides them.
"""

from __future__ import annotations

from typing import Any

from rdplab.backends.router_sim import SimRouterBackend
from rdplab.backends.sim import SimBackend
from rdplab.connection import ConnectionResult, connect
from rdplab.errors import RdplabError
from rdplab.lab import Scenario
from rdplab.netlab.session import NetSession
from rdplab.scenario import ScenarioRun, run_steps, steps

#: gather and detect on the twins (the router's read back), then diff and judge
GRADE = steps("gather", "detect")
JUDGE = steps("diff", "judge")


def client_side_address(scenario: Scenario) -> str:
    r = scenario.network.router
    if r is None:
        raise RdplabError(f"scenario {scenario.id}: its lab has no router (network.router)")
    return r.router_vpn_address if scenario.network.client_site == "vpn" else r.outside_address


def check(scenario: Scenario, session: NetSession) -> ScenarioRun:
    """Grade the running network lab: the broken twins with the router's real state, the
    connection tried for real from the client's namespace."""
    from rdplab.exercise.run import all_fixes, rebuild
    from rdplab.netlab import router_state
    from rdplab.providers.sim import SimProvider

    if session.scenario != scenario.id:
        raise RdplabError(
            f"the running network lab serves {session.scenario}, not exercise {scenario.id}"
            " (start it with rdplab exercise new --network)"
        )
    healthy = healthy_snapshots(scenario, SimProvider())
    run = rebuild(scenario)
    router = run.lab.router
    if not isinstance(router, SimRouterBackend):
        raise RdplabError(f"exercise {scenario.id}: its lab has no router (network.router)")
    router.twin = router_state.read(
        session.namespace("router"), router.twin, client_side_address(scenario)
    )
    run.base = healthy
    run.fixes = all_fixes(scenario)
    run_steps(run, GRADE)
    run.connection = live_connection(scenario, session, run)
    return run_steps(run, JUDGE)


def healthy_snapshots(scenario: Scenario, provider: Any) -> dict[str, dict[str, Any]]:
    """The healthy state the exercise was drawn from (a fresh reset, snapshots taken)."""
    from rdplab.scenario import new_run

    fresh = run_steps(new_run(provider, scenario), steps("reset", "baseline"))
    if fresh.error:
        raise RdplabError(f"the healthy lab: {fresh.failed_step} failed: {fresh.error}")
    return fresh.base


def live_connection(scenario: Scenario, session: NetSession, run: ScenarioRun) -> ConnectionResult:
    """A real attempt from the client's namespace to the running lab (name resolution
    through the lab's DNS server), the client's own decisions past the wire from its twin."""
    from rdplab.netlab import dns
    from rdplab.netlab.run import call_in
    from rdplab.probe import probe
    from rdplab.providers.netns import PROBE_TIMEOUT, merge

    client, host = run.lab.client, run.lab.host
    assert isinstance(client, SimBackend) and isinstance(host, SimBackend)
    router = run.lab.router
    rtwin = router.twin if isinstance(router, SimRouterBackend) else None
    ns = session.namespace("client")
    name, port = scenario.network.host_name, scenario.network.target_port
    local = client.twin.dns.resolve(name, {})
    answer = local.address or call_in(ns, lambda: dns.query(session.dns_server, name))
    if answer is None:
        return connect(client.twin, host.twin, scenario.network, router=rtwin)
    evidence = f"{name} -> {answer} (the client's resolver in its namespace)"
    wire: ConnectionResult = call_in(
        ns,
        lambda: probe(answer, port, resolution=evidence, timeout=PROBE_TIMEOUT),
        timeout=4 * PROBE_TIMEOUT + 10,
    )
    return merge(wire, connect(client.twin, host.twin, scenario.network, router=rtwin))
