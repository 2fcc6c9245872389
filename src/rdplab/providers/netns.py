"""The netns provider: the same lab, with the network and the RDP wire real.

The Windows machines stay twins (as on ``sim``: the same reset, break, gather, fix), and
so does the router's state; every connect step builds the lab's network as Linux network
namespaces (``rdplab.netlab``: client, router, host joined by veth pairs, each run's own
names), with the router's real nftables rules made from the router twin (its port
forwards, the MTU of the client's link, ICMP fragmentation-needed passed or dropped, MSS
clamping), the host's firewall verdict as a real nftables drop, the host's current
address, and the lab's DNS server in the router namespace. The host namespace runs
``rdplab.serve.RDPServer`` answering as the host twin says; the client namespace runs
the real ``rdplab.probe``. What the probe meets is the connection's verdict: refused,
timed out, a failed negotiation, a TLS handshake that stalls.

Stages no packet decides are the client's own choices, taken from the client twin as on
``sim`` and said so: mstsc's revocation check, its CredSSP decision (KB 4093492) and the
licensing store. The model (``rdplab.connection``) is run beside every wire attempt; a
scenario whose failed stage or codes differ between the wire and the model stops with an
error naming both, so the lab suite fails on any disagreement.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from itertools import count
from typing import TYPE_CHECKING, Any

from rdplab import windows as win
from rdplab.backends.router_sim import SimRouterBackend
from rdplab.backends.sim import SimBackend
from rdplab.connection import ConnectionResult, Stage, connect
from rdplab.errors import ProviderError, RdplabError
from rdplab.lab import Scenario
from rdplab.netlab import nft
from rdplab.network import Network
from rdplab.providers.base import LabMachines
from rdplab.providers.sim import SimProvider
from rdplab.twin import Twin
from rdplab.twin.router import RouterTwin

if TYPE_CHECKING:
    from rdplab.netlab import NetLab, NetPlan
    from rdplab.serve import Behaviour, RDPServer

#: How long the probe waits for each answer. A timeout is the expected answer of every
#: dropped SYN and stalled handshake, so it bounds the cost of those scenarios.
PROBE_TIMEOUT = 2.0
#: The stages the wire decides; after them the client's own decisions (from its twin).
WIRE_STAGES = ("name-resolution", "tcp", "x224", "tls")

_runs = count()


class NetnsProvider(SimProvider):
    name = "netns"
    runs_on = (
        "Windows twins (simulated; no Windows ran) behind real Linux network namespaces:"
        " router nftables, the RDP listener and the probe on real sockets"
    )

    def __init__(self, worker: int | None = None) -> None:
        #: the pytest-xdist worker (the plugin passes its index): in every namespace's name,
        #: with the pid, so each worker builds its own namespaces
        self.worker = str(worker if worker is not None else "")
        self._checked = False
        #: capture what crosses the router (needs tcpdump; the report's ladders)
        self.capture = shutil.which("tcpdump") is not None

    def preflight(self) -> None:
        from rdplab.netlab import NetlabUnavailable, require

        try:
            require()
        except NetlabUnavailable as exc:
            raise ProviderError(f"the netns provider cannot run here: {exc}") from None
        except ImportError as exc:  # dnslib or dpkt missing
            raise ProviderError(
                f"the netns provider needs {exc.name} (pip install 'rdplab[netns]')"
            ) from None

    def reach(self) -> None:
        from rdplab.netlab import cleanup_stale

        if not self._checked:
            self.preflight()
            cleanup_stale()  # what a crashed run left behind
            self._checked = True

    def connect(self, scenario: Scenario, machines: LabMachines) -> ConnectionResult:
        self.reach()
        client, host, router = machines.client, machines.host, machines.router
        assert isinstance(client, SimBackend) and isinstance(host, SimBackend)
        rtwin = router.twin if isinstance(router, SimRouterBackend) else None
        wire = self.wire(scenario, client.twin, host.twin, rtwin)
        # the model after the wire, on the same twins: it makes the client's side effects
        # once, as mstsc would (and as on sim), and is what the wire must agree with
        model = connect(client.twin, host.twin, scenario.network, router=rtwin)
        result = merge(wire, model)
        if (result.failed_stage, result.error_code, result.extended_code) != (
            model.failed_stage,
            model.error_code,
            model.extended_code,
        ):
            raise RdplabError(
                f"netns and sim disagree on {scenario.id}: the wire failed at"
                f" {result.failed_stage or 'nothing'} ({result.error_code}/"
                f"{result.extended_code}: {result.evidence}); the model at"
                f" {model.failed_stage or 'nothing'} ({model.error_code}/"
                f"{model.extended_code}: {model.evidence})"
            )
        return result

    # -- the wire ----------------------------------------------------------------------------
    def wire(
        self, scenario: Scenario, client: Twin, host: Twin, router: RouterTwin | None
    ) -> ConnectionResult:
        """One connection attempt over real packets, as the twins' state says."""
        from rdplab.netlab import build

        net = scenario.network
        port = net.target_port
        plan = net_plan(scenario, client, host, router, self.run_id())
        with build(plan) as lab:
            serve_host(lab, scenario, client, host)
            answer, source = resolve(lab, client, net.host_name)
            if answer is None:
                failed = ConnectionResult(False, failed_stage="name-resolution")
                failed.stages.append(
                    Stage("name-resolution", False, f"{net.host_name} does not resolve")
                )
                failed.error_code, failed.extended_code = "0x904", "0x7"
                return failed
            tcp_only = None
            if net.transport == "websocket":
                tcp_only = "the WebSocket transport's HTTPS upgrade is not spoken by the probe"
            evidence = f"{net.host_name} -> {answer} (from the client's {source})"
            capture = lab.capture() if self.capture else None
            try:
                result: ConnectionResult = lab.probe(
                    answer, port, timeout=PROBE_TIMEOUT, resolution=evidence, tcp_only=tcp_only
                )
            finally:
                events = capture.stop() if capture is not None else []
            result.ladder = [dataclasses.asdict(e) for e in events]
        return result

    def run_id(self) -> str:
        """Short and unique per process and attempt (the netlab names carry the pid)."""
        return f"n{self.worker}x{next(_runs):x}"[-10:]


def net_plan(
    scenario: Scenario, client: Twin, host: Twin, router: RouterTwin | None, run_id: str
) -> NetPlan:
    """The netlab plan for the twins' state now."""
    from rdplab.netlab import Forward, NetPlan

    net = scenario.network
    port = net.target_port
    host_address = host.address() or net.host_address
    inbound = host.firewall.evaluate(
        "In", "TCP", port, _program(net), peer=net.peer_address, local_subnet=net.subnet
    )
    fields: dict[str, Any] = {
        "run_id": run_id,
        "client_site": net.client_site,
        "host_address": host_address,
        "client_lan_address": net.client_address,
        "host_drop_ports": () if inbound.allowed else (port,),
        "dns_zone": dict(net.zone),
    }
    if router is not None:
        r = net.router
        assert r is not None
        fields.update(
            router_lan_address=r.lan_address,
            router_outside_address=r.outside_address,
            client_outside_address=r.client_outside_address,
            router_vpn_address=r.router_vpn_address,
            client_vpn_address=r.client_vpn_address,
            forwards=tuple(Forward(f.port, f.to, f.to_port) for f in router.forwards.values()),
            client_link_mtu=router.link_mtu,
            icmp_frag_needed=router.icmp_frag_needed,
            mss_clamp=router.link_mtu - 40 if router.mss_clamp else None,
        )
    return NetPlan(**fields)


def _program(net: Network) -> str:
    return win.WS_PROGRAM if net.transport == "websocket" else win.TS_PROGRAM


def serve_host(
    lab: NetLab, scenario: Scenario, client: Twin, host: Twin, on_event: Any = None
) -> RDPServer:
    """The machines' side of a built lab: the client's own outbound block as a real drop in
    its namespace, and the host's listener in the host's, answering as its twin says (its
    firewall is already a real drop: ``net_plan``'s ``host_drop_ports``). Stopped with the
    lab."""
    from rdplab.serve import behaviour_for

    port = scenario.network.target_port
    if not client.firewall.evaluate("Out", "TCP", port).allowed:
        nft.apply(lab.ns("client"), outbound_drop(port))
    program = _program(scenario.network)
    behaviour = behaviour_for(host, port, program)
    if behaviour.listener == "drop":  # the host's nftables drops it for real
        behaviour = behaviour_for_open(host, port, program)
    server: RDPServer = lab.serve_rdp(behaviour, port=port, on_event=on_event)
    return server


def behaviour_for_open(host: Twin, port: int, program: str) -> Behaviour:
    """The listener's behaviour with the firewall left to the real nftables drop."""
    from rdplab.serve import behaviour_for

    opened = copy.deepcopy(host)
    opened.firewall.rules = [r for r in opened.firewall.rules if r.action != "Block"]
    for profile in opened.firewall.profiles.values():
        profile.default_inbound = "Allow"
    return behaviour_for(opened, port, program)


def resolve(lab: NetLab, client: Twin, name: str) -> tuple[str | None, str]:
    """Resolve as the client does: its hosts file and cache (the twin's own state), else
    the lab's DNS server, asked for real from the client namespace."""
    local = client.dns.resolve(name, {})
    if local.address is not None:
        return local.address, local.source
    return lab.resolve(name), "DNS server in the router namespace"


def outbound_drop(port: int) -> str:
    """The client's own firewall blocking outbound TCP to the port, as nftables rules."""
    return (
        "table inet rdplab_client {\n"
        " chain output { type filter hook output priority filter; policy accept;\n"
        f"  tcp dport {port} drop\n"
        " }\n}\n"
    )


def merge(wire: ConnectionResult, model: ConnectionResult) -> ConnectionResult:
    """The connection's verdict: the wire's, up to where packets decide; past it (the wire
    got through), the client's own decisions, which the model took from its twin."""
    if not wire.ok and wire.failed_stage in WIRE_STAGES:
        wire.notes.append("decided on the wire (netns: real packets)")
        return wire
    seen = {s.name for s in wire.stages if s.ok}
    for stage in model.stages:
        if stage.name not in seen:
            stage.detail += " (the client's own decision, from its twin: no packet decides it)"
    model.notes.append(
        f"wire: {', '.join(s.name for s in wire.stages if s.ok)} passed on real packets"
    )
    model.ladder = wire.ladder
    return model
