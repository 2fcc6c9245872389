"""What real-machine providers share: one transport and agent backend per machine, and
the live connection probe.

A subclass says how to reach each machine (``open_transport``), how to bring it back to
its baseline (``restore``) and where the host's RDP listener is (``rdp_endpoint``). The
base opens each transport once, checks (and if needed installs) the agent once per
machine, hands the same backends to every scenario with a fresh call log, and closes
everything in ``close()``.

``connect()`` is the live probe (``rdplab.probe``): the name is resolved the way the
client resolves it, from the client's facts gathered just before (hosts file, then the
resolver cache, then the lab's DNS zone, which the facts cannot show), and the host's
listener is probed from Python for TCP, X.224 and TLS. What mstsc decides on the client
is checked from the client's own state: its firewall's outbound rules (from its facts) and
the revocation check of the certificate the probe received (the CRL locations fetched from
the client through the agent). CredSSP and licensing are reported as not probed.

``testinfra_host`` hands pytest-testinfra a Host whose commands run through the same open
transport (``rdplab.testinfra_hosts``), so no password goes into a testinfra host URL.

A scenario whose lab has a router (``network.router``) also gets the router: a Linux
gateway over SSH (``rdplab.backends.router_ssh``) that the subclass describes
(``open_router``). Its transport is opened once; its baseline is its snapshot the first
time it is reset (``router_baseline``; the inventory keeps it in a file), and every reset
brings it back there in one command (``SSHRouterBackend.restore``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from cryptography import x509

from rdplab import credssp_wire, probe
from rdplab.backends.agent import AgentBackend
from rdplab.backends.base import Backend, CallLog
from rdplab.backends.router_ssh import SSHRouterBackend
from rdplab.catalog import credssp_oracle_mismatch as credssp
from rdplab.catalog.base import ROLES, Role
from rdplab.connection import ConnectionResult, Stage, _Run
from rdplab.errors import ProviderError
from rdplab.facts import Facts
from rdplab.lab import Scenario
from rdplab.ops import BatchResult, Op
from rdplab.providers.base import LabMachines, Provider
from rdplab.transports.base import Transport
from rdplab.twin.certs import crl_urls

AfterApply = Callable[["RemoteBackend", list[Op], BatchResult], None]
BeforeApply = Callable[["RemoteBackend", list[Op]], None]


class RemoteBackend(AgentBackend):
    """The agent backend, remembering the facts of its last full gather (the probe reads
    the client's DNS answer from them) and telling the provider about every batch."""

    def __init__(
        self,
        role: str,
        transport: Transport,
        calls: CallLog,
        after_apply: AfterApply | None,
        before_apply: BeforeApply | None = None,
    ) -> None:
        super().__init__(role, transport, calls)
        self.last_facts: Facts | None = None
        self.after_apply = after_apply
        self.before_apply = before_apply

    def apply(self, ops: list[Op]) -> BatchResult:
        if self.before_apply is not None:
            self.before_apply(self, ops)
        result = super().apply(ops)
        if self.after_apply is not None:
            self.after_apply(self, ops, result)
        return result

    def gather(self, request: dict[str, Any] | None = None) -> Facts:
        facts = super().gather(request)
        if request:  # the scenario's gathers ask for ports; snapshots ask for nothing
            self.last_facts = facts
        return facts


class RemoteProvider(Provider):
    #: seconds the probe waits for TCP, the X.224 answer and the TLS handshake
    probe_timeout: float = 5.0
    #: install or replace the agent when it is missing or stale (else: a clear error)
    install_agent: bool = True
    #: how the user turns the install on, for the error when it is off
    agent_hint: str = "run with agent install enabled"

    def __init__(self) -> None:
        self.transports: dict[Role, Transport] = {}
        self.backends: dict[Role, RemoteBackend] = {}
        self.agent_status: dict[Role, str] = {}
        self.router: SSHRouterBackend | None = None
        self.router_base: dict[str, Any] | None = None

    # -- what a real provider supplies ----------------------------------------------------
    @abstractmethod
    def open_transport(self, role: Role) -> Transport:
        """A transport (not yet open) to the machine playing ``role``."""

    @abstractmethod
    def restore(self, scenario: Scenario, roles: tuple[Role, ...] = ROLES) -> None:
        """Bring these machines back to their baseline (snapshot, journal...)."""

    @abstractmethod
    def rdp_endpoint(self, scenario: Scenario) -> tuple[str, int]:
        """Where the probe reaches the host's listener for the port the client dials
        (``network.target_port``: RDP-Tcp, or the WebSocket port) when the client resolves
        the host's lab name to its lab address."""

    def open_router(self) -> SSHRouterBackend | None:
        """The lab's router, its transport not yet open (None: this lab has none)."""
        return None

    def no_router(self, scenario: Scenario) -> str:
        """What to say when ``scenario`` has a router and this lab has none."""
        return (
            f"scenario {scenario.id} has a router (network.router in its lab file), and the"
            f" {self.name} lab has none"
        )

    def router_baseline(self, router: SSHRouterBackend) -> dict[str, Any]:
        """The router's baseline: its snapshot the first time it is needed."""
        if self.router_base is None:
            self.router_base = router.snapshot()
        return self.router_base

    def before_apply(self, backend: RemoteBackend, ops: list[Op]) -> None:
        """Called before every batch is sent (the inventory provider journals it first)."""

    def after_apply(self, backend: RemoteBackend, ops: list[Op], result: BatchResult) -> None:
        """Called after every batch (the inventory provider completes its journal entry)."""

    # -- machines ---------------------------------------------------------------------------
    def machine(self, role: Role) -> RemoteBackend:
        """The open backend for ``role``: the transport is opened when needed (again after
        ``drop``), the agent is checked the first time only."""
        if role not in self.backends:
            transport = self.open_transport(role)
            transport.open()
            self.transports[role] = transport
            backend = RemoteBackend(role, transport, CallLog(), self.after_apply, self.before_apply)
            self.backends[role] = backend
            if role not in self.agent_status:  # once per machine, not per (re)connection
                try:
                    self.agent_status[role] = backend.ensure_agent(
                        install=self.install_agent, hint=self.agent_hint
                    )
                except BaseException:
                    self.drop(role)
                    raise
        return self.backends[role]

    def router_machine(self, scenario: Scenario | None = None) -> SSHRouterBackend | None:
        """The open router backend (opened the first time); None when the lab has no router
        and no scenario needs one, a ProviderError when ``scenario`` needs one."""
        if self.router is None:
            router = self.open_router()
            if router is None:
                if scenario is not None:
                    raise ProviderError(self.no_router(scenario))
                return None
            self.router = router
        self.router.transport.open()  # once; again only when the connection dropped
        if scenario is not None and scenario.network.router is not None:
            r = scenario.network.router  # reported where the router's interfaces are not named
            self.router.addresses = {"lan": r.lan_address, "outside": r.outside_address}
        return self.router

    def restore_router(self, scenario: Scenario) -> None:
        """The router back to its baseline (one command; a no-op when it is there)."""
        router = self.router_machine(scenario)
        assert router is not None
        router.calls = CallLog()
        router.calls.phase = "reset"
        result = router.restore(self.router_baseline(router))
        if result.errors:
            failed = result.errors[0]
            raise ProviderError(
                f"{router.host} (router): bringing it back to its baseline failed at"
                f" {failed.op}: {failed.error}"
            )

    def drop(self, role: Role) -> None:
        """Close and forget one machine's transport (it is reopened when next needed)."""
        self.backends.pop(role, None)
        transport = self.transports.pop(role, None)
        if transport is not None:
            transport.close()

    def reset(self, scenario: Scenario) -> LabMachines:
        self.restore(scenario, self.to_restore(scenario))
        if scenario.network.router is not None:
            self.restore_router(scenario)
        return self.attach(scenario)

    def attach(self, scenario: Scenario) -> LabMachines:
        """Both machines (and the router, when the lab has one) as they are, with a fresh
        call log (``reset`` restores first)."""
        calls = CallLog()
        backends = {role: self.machine(role) for role in ROLES}
        for b in backends.values():
            b.calls = calls
            b.last_facts = None
        router = None
        if scenario.network.router is not None:
            router = self.router_machine(scenario)
            assert router is not None
            router.calls = calls
        return LabMachines(backends["client"], backends["host"], calls, router)

    def reach(self) -> None:
        """Open both machines' transports and check their agents."""
        for role in ROLES:
            self.machine(role)

    def close(self) -> None:
        for role in list(self.transports):
            self.drop(role)
        router, self.router = self.router, None
        if router is not None:
            router.transport.close()

    def testinfra_host(self, role: Role) -> Any:
        from rdplab.testinfra_hosts import testinfra_host

        if role == "router":
            router = self.router_machine()
            if router is None:
                return None
            return testinfra_host(router.transport, sudo=router.sudo)
        return testinfra_host(self.machine(role).transport)

    # -- the connection ---------------------------------------------------------------------
    def connect(self, scenario: Scenario, machines: LabMachines) -> ConnectionResult:
        net = scenario.network
        address, port = self.rdp_endpoint(scenario)
        tcp_only = None
        if net.transport == "websocket":
            tcp_only = (
                "the WebSocket transport carries RDP inside an HTTPS WebSocket upgrade, which"
                " the probe does not speak"
            )
        client = machines.client
        facts = client.last_facts if isinstance(client, RemoteBackend) else None
        if facts is None:
            return probe.probe(address, port, timeout=self.probe_timeout, tcp_only=tcp_only)
        answer, source = resolve_like_client(facts, net.host_name, net.zone)
        if answer is None:
            return _Run().failed(
                "name-resolution",
                f"{net.host_name} is not in the client's hosts file or DNS cache, nor in the"
                " lab's DNS zone",
            )
        evidence = f"{net.host_name} -> {answer} (from the client's {source})"
        if answer != net.host_address:
            # the client would dial another address: so does the probe (a stale record
            # times out or reaches the wrong machine, as it would for mstsc)
            address = answer
            evidence += f"; the host is {net.host_address}"
        elif address != answer:
            evidence += f"; probed at {address}:{port}"
        outbound = facts.outbound(net.target_port)
        if not outbound.allowed:  # mstsc's SYN never leaves the client
            run = _Run()
            run.passed("name-resolution", evidence)
            return run.failed(
                "tcp",
                f"the client's firewall drops outbound TCP {net.target_port}:"
                f" {outbound.reason} (from the client's own rules; the probe itself runs on"
                " the test runner)",
            )
        result = probe.probe(
            address, port, resolution=evidence, timeout=self.probe_timeout, tcp_only=tcp_only
        )
        result = self.check_revocation_on_client(result, facts, client)
        host = machines.host
        host_facts = host.last_facts if isinstance(host, RemoteBackend) else None
        return check_credssp(result, facts, host_facts)

    def check_revocation_on_client(
        self, result: ConnectionResult, facts: Facts, client: Backend
    ) -> ConnectionResult:
        """mstsc checks the revocation of the host's certificate on the client: fetch the
        CRL locations of the certificate the probe received from the client itself (its
        gather probes; one more call only for a location it was not asked about) and fail
        TLS when one is unreachable and the client's policy wants the check."""
        der = result.peer_certificate
        tls = next((s for s in result.stages if s.name == "tls" and s.ok), None)
        if der is None or tls is None:
            return result
        urls = crl_urls(x509.load_der_x509_certificate(der))
        check = facts.effective("revocation_check")
        if not urls:
            return result
        if check.value == 0:
            setting = check.describe("AllowCertRevocationCheck")
            result.notes.append(f"revocation check skipped on the client: {setting}")
            return result
        missing = [u for u in urls if facts.probe(u) is None]
        if missing:
            facts = client.gather({"probe_urls": missing})
        answers = {u: facts.probe(u) or {"reachable": False} for u in urls}
        bad = {
            u: a.get("detail", "no answer") for u, a in answers.items() if not a.get("reachable")
        }
        if not bad:
            tls.detail += f"; revocation checked from the client ({', '.join(urls)})"
            return result
        run = _Run()
        for stage in result.stages[: result.stages.index(tls)]:
            run.passed(stage.name, stage.detail)
        failed = run.failed(
            "tls",
            f"revocation check failed on the client for {tls.detail.split(': ', 1)[-1]}: "
            + "; ".join(f"{u}: {d}" for u, d in bad.items()),
        )
        failed.peer_certificate = der
        return failed


def check_credssp(result: ConnectionResult, client: Facts, host: Facts | None) -> ConnectionResult:
    """mstsc's CredSSP decision from what the probe read on the wire: the host's CredSSP
    version (below 5: without the 2018 update) against the client's patch level and
    AllowEncryptionOracle, by the KB 4093492 matrix. The host's own policy (from its facts)
    places a patched host in the matrix. Authentication itself stays unprobed."""
    version = result.credssp_version
    if not result.ok or version is None:
        return result
    patched = version >= credssp_wire.FIXED_VERSION
    if patched and host is None:
        return result  # a patched host's place in the matrix is its policy: unknown here
    host_level = credssp.level(host, patched=patched) if host else credssp.NOT_UPDATED
    client_level = credssp.level(client)
    said = (
        f"host answered CredSSP TSRequest version {version} ('{host_level}'), the client is"
        f" '{client_level}' (its tspkg {client.tspkg_version},"
        f" {client.effective('encryption_oracle').describe('AllowEncryptionOracle')})"
    )
    if not credssp.allowed(client_level, host_level):
        run = _Run()
        for stage in result.stages:
            run.passed(stage.name, stage.detail)
        failed = run.failed("credssp", f"CredSSP refused: {said} (KB 4093492 matrix)")
        failed.credssp_version, failed.peer_certificate = version, result.peer_certificate
        return failed
    result.stages.append(
        Stage(
            "credssp",
            True,
            f"{said}: allowed by the KB 4093492 matrix; authentication itself not probed"
            " (needs the user's credentials)",
        )
    )
    result.not_probed.pop("credssp", None)
    result.notes = [n for n in result.notes if not n.startswith("credssp: not probed")]
    return result


def resolve_like_client(facts: Facts, name: str, zone: dict[str, str]) -> tuple[str | None, str]:
    """The Windows DNS client's order: hosts file, then its resolver cache, then its DNS
    server. The facts show the first two; the lab's zone stands in for the server."""
    key = name.lower()
    if key in facts.hosts:
        return facts.hosts[key], "hosts file"
    if key in facts.dns_cache:
        return facts.dns_cache[key], "DNS cache"
    answer = zone.get(key)
    return answer, "lab DNS zone (the client's DNS server itself was not queried)"


__all__ = ["RemoteBackend", "RemoteProvider", "resolve_like_client"]
