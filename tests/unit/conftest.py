"""Fixtures for the twin, detector and connection unit tests.

Twins are wired to the lab network exactly as the sim provider wires them (the client's
DNS server is the lab zone; only the PKI address answers HTTP), so detectors and the
connection model see what a scenario run would show them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import pytest

from rdplab.baselines import build_twin
from rdplab.catalog import cert_revocation_unreachable as revocation
from rdplab.catalog.base import DetectContext, Fault, Placement
from rdplab.facts import Facts
from rdplab.network import Network
from rdplab.ops import BatchResult, Op, render_op
from rdplab.scenario import gather_args
from rdplab.twin import Twin

CLIENT_BASELINE = "windows-11"
HOST_BASELINE = "windows-server-2022"

MakeTwin = Callable[..., Twin]
ApplyOk = Callable[[Twin, Iterable[Op]], BatchResult]
Contextualize = Callable[..., DetectContext]


@pytest.fixture
def net() -> Network:
    return Network()


@pytest.fixture
def make_twin(net: Network) -> MakeTwin:
    """A fresh twin from a baseline, on the lab network."""

    def make(baseline: str, computer: str, network: Network | None = None) -> Twin:
        n = network or net
        twin = build_twin(baseline, computer)
        twin.zone = n.zone
        twin.http_reach = n.pki_address.__eq__
        return twin

    return make


@pytest.fixture
def client(make_twin: MakeTwin) -> Twin:
    return make_twin(CLIENT_BASELINE, "CLIENT")


@pytest.fixture
def host(make_twin: MakeTwin) -> Twin:
    return make_twin(HOST_BASELINE, "HOST")


@pytest.fixture(scope="session")
def _bound_host_template() -> Twin:
    twin = build_twin(HOST_BASELINE, "HOST")
    ctx = Network().context()
    ops = [render_op(o, ctx) for o in revocation.FAULT.placements[0].breaks["host"]]
    result = twin.apply(ops)
    assert not result.errors and result.changes == len(ops)
    return twin


@pytest.fixture
def bound_host(_bound_host_template: Twin, net: Network) -> Twin:
    """The host after cert-revocation-unreachable's own host break: the lab CA's server
    certificate imported into My and bound to RDP-Tcp by SSLCertificateSHA1Hash. Built
    once and copied: loading the PFX costs tens of milliseconds."""
    twin = copy.deepcopy(_bound_host_template)
    twin.zone = net.zone
    twin.http_reach = net.pki_address.__eq__
    return twin


@pytest.fixture
def apply_ok() -> ApplyOk:
    """Apply a batch and fail the test if any op errored."""

    def apply(twin: Twin, ops: Iterable[Op]) -> BatchResult:
        result = twin.apply(list(ops))
        assert not result.errors, [r.to_json() for r in result.errors]
        return result

    return apply


@pytest.fixture
def contextualize(net: Network) -> Contextualize:
    """Gather both twins the way the scenario runner does (host first, then the client,
    each with what the faults ask for: ``scenario.gather_args``) and wrap the facts for
    detectors."""

    def ctx(client: Twin, host: Twin, network: Network | None = None) -> DetectContext:
        n = network or net
        host_facts = Facts.parse("host", host.gather(gather_args("host", n, {})))
        client_facts = Facts.parse(
            "client", client.gather(gather_args("client", n, {"host": host_facts}))
        )
        return DetectContext(client_facts, host_facts, n)

    return ctx


@pytest.fixture
def break_twins(
    make_twin: MakeTwin, apply_ok: ApplyOk, net: Network
) -> Callable[..., tuple[Twin, Twin]]:
    """Twins from the fault's baselines with one placement's break ops applied, rendered
    with the lab network's values."""

    def build(fault: Fault, placement: Placement) -> tuple[Twin, Twin]:
        twins = {
            "client": make_twin(fault.baselines.get("client", CLIENT_BASELINE), "CLIENT"),
            "host": make_twin(fault.baselines.get("host", HOST_BASELINE), "HOST"),
        }
        ctx = net.context()
        for role, ops in placement.breaks.items():
            result = apply_ok(twins[role], [render_op(o, ctx) for o in ops])
            assert result.changes > 0, f"break of {fault.id} on {role} changed nothing"
        return twins["client"], twins["host"]

    return build
