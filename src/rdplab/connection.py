"""The connection model: an RDP connection from client to host, stage by stage.

name resolution -> TCP -> X.224 negotiation -> TLS -> CredSSP/NLA -> licensing. The sim
provider computes it from the two twins; it reads the machines' own state, not the
detectors' findings, so the lab suite checks one against the other.

Negotiation follows [MS-RDPBCGR] 2.2.1.1.1 / 2.2.1.2.1 / 2.2.1.2.2: the client asks for
TLS and CredSSP (PROTOCOL_SSL | PROTOCOL_HYBRID | PROTOCOL_HYBRID_EX, as mstsc does); the
server picks one or answers a failure code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from rdplab import policy
from rdplab import windows as win
from rdplab.catalog import credssp_oracle_mismatch as credssp
from rdplab.catalog.base import SOCKET_CLOSED
from rdplab.network import Network
from rdplab.twin.machine import Twin
from rdplab.twin.router import ETHERNET_MTU, RouterTwin

PROTOCOL_RDP, PROTOCOL_SSL, PROTOCOL_HYBRID, PROTOCOL_HYBRID_EX = 0x0, 0x1, 0x2, 0x8
SSL_REQUIRED_BY_SERVER = 0x1
SSL_NOT_ALLOWED_BY_SERVER = 0x2
SSL_CERT_NOT_ON_SERVER = 0x3
HYBRID_REQUIRED_BY_SERVER = 0x5
CLIENT_REQUEST = PROTOCOL_SSL | PROTOCOL_HYBRID | PROTOCOL_HYBRID_EX


@dataclass
class Stage:
    name: str
    ok: bool
    detail: str


@dataclass
class ConnectionResult:
    ok: bool
    stages: list[Stage] = field(default_factory=list)
    failed_stage: str | None = None
    error_code: str | None = None
    extended_code: str | None = None
    negotiation_failure: int | None = None
    notes: list[str] = field(default_factory=list)
    #: stages a live probe could not exercise, with the reason (empty on sim)
    not_probed: dict[str, str] = field(default_factory=dict)
    #: the DER certificate a live probe's TLS handshake received (None on sim)
    peer_certificate: bytes | None = field(default=None, repr=False, compare=False)
    #: the CredSSP version in the server's first TSRequest, read by a live probe
    credssp_version: int | None = None
    #: the protocol the server's RDP_NEG_RSP selected, read by a live probe
    selected_protocol: int | None = None
    #: the packets that crossed the router (netns provider: its capture), as JSON rows
    ladder: list[dict[str, Any]] = field(default_factory=list, compare=False)

    @property
    def evidence(self) -> str:
        return self.stages[-1].detail if self.stages else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed_stage": self.failed_stage,
            "error_code": self.error_code,
            "extended_code": self.extended_code,
            "negotiation_failure": self.negotiation_failure,
            "stages": [vars(s) for s in self.stages],
            "notes": list(self.notes),
            **({"not_probed": dict(self.not_probed)} if self.not_probed else {}),
            **({"credssp_version": self.credssp_version} if self.credssp_version else {}),
            **({"ladder": list(self.ladder)} if self.ladder else {}),
        }


class _Run:
    def __init__(self) -> None:
        self.result = ConnectionResult(ok=False)

    def passed(self, name: str, detail: str) -> None:
        self.result.stages.append(Stage(name, True, detail))

    def failed(self, name: str, detail: str, negotiation: int | None = None) -> ConnectionResult:
        r = self.result
        r.stages.append(Stage(name, False, detail))
        r.failed_stage = name
        # the CredSSP refusal has its own dialog, not 0x904 (KB 4295591; sources.md s8)
        r.error_code, r.extended_code = (None, None) if name == "credssp" else SOCKET_CLOSED
        r.negotiation_failure = negotiation
        return r


def connect(
    client: Twin,
    host: Twin,
    net: Network,
    host_address: str | None = None,
    router: RouterTwin | None = None,
) -> ConnectionResult:
    """Simulate mstsc on client dialing net.host_name. Runs the client's side effects
    (resolver cache, MSLicensing recreation on an elevated run). With a router, the path
    is walked: the client's link, the router's forward, the host's current address."""
    run = _Run()
    host_address = host_address or host.address() or net.host_address
    port = net.target_port

    # 1. name resolution
    res = client.dns.resolve(net.host_name, net.zone)
    if res.address is None:
        return run.failed("name-resolution", f"{net.host_name} does not resolve")
    run.passed("name-resolution", f"{net.host_name} -> {res.address} (from {res.source})")

    # 2. TCP
    out = client.firewall.evaluate("Out", "TCP", port)
    if not out.allowed:
        return run.failed("tcp", f"client firewall drops outbound TCP {port}: {out.reason}")
    if res.address != net.dial_address:
        return run.failed(
            "tcp",
            f"SYN to {res.address}:{port} timed out: no machine there"
            f" (the host is {net.dial_address}; {res.source} answer is stale)",
        )
    if router is not None and net.client_site == "outside":
        fwd = router.forward(port)
        if fwd is None:
            return run.failed(
                "tcp",
                f"SYN to {res.address}:{port} timed out: router {router.outside_address} holds"
                f" no forward for TCP {port} and drops it",
            )
        if fwd.to != host_address:
            return run.failed(
                "tcp",
                f"SYN to {res.address}:{port} timed out: the router forwards TCP {port} to"
                f" {fwd.to}, where no machine answers (the host is at {host_address})",
            )
        run.result.notes.append(
            f"router {router.outside_address}:{port} -> {fwd.to}:{fwd.to_port} (DNAT)"
        )
    elif host_address != net.host_address and net.client_site != "outside":
        return run.failed(
            "tcp",
            f"SYN to {res.address}:{port} timed out: the host moved to {host_address}",
        )
    program = win.WS_PROGRAM if net.transport == "websocket" else win.TS_PROGRAM
    # the host's inbound rules see the client's address (a rule's RemoteAddress scope)
    inbound = host.firewall.evaluate(
        "In", "TCP", port, program, peer=net.peer_address, local_subnet=net.subnet
    )
    if not inbound.allowed:
        return run.failed(
            "tcp", f"SYN to {res.address}:{port} timed out: host firewall: {inbound.reason}"
        )
    listening = host.listening()
    if port not in listening:
        reasons = []
        if not host.services.running(win.TERMSERVICE):
            reasons.append("TermService is stopped")
        deny = policy.deny_ts_connections(host.lookup)
        if deny.value != 0:
            reasons.append(deny.describe("fDenyTSConnections"))
        if listening:
            reasons.append(f"listening on {sorted(listening)}")
        return run.failed(
            "tcp", f"connection to {res.address}:{port} refused ({'; '.join(reasons)})"
        )
    run.passed("tcp", f"connected to {res.address}:{port} ({listening[port]}); {inbound.reason}")

    # 3. X.224 negotiation
    layer = int(policy.security_layer(host.lookup).value)
    nla = policy.user_authentication(host.lookup)
    auth = policy.server_auth_level(client.lookup)
    if layer == win.SECURITY_LAYER_RDP:
        # Three OPEN QUESTIONS meet here; the twin picks one answer to each (docs/sources.md
        # s4, "Open questions"; tests/unit/test_open_questions.py names each choice):
        # (a) [MS-RDPBCGR] 3.3.5.3.2 lets a Standard-RDP-only server answer mstsc's
        #     SSL|HYBRID request with RDP_NEG_FAILURE SSL_NOT_ALLOWED_BY_SERVER or with an
        #     RDP_NEG_RSP selecting PROTOCOL_RDP. The twin sends the failure (2.2.1.2.2's
        #     definition of 0x2; FreeRDP logs against such servers show it).
        # (b) Whether mstsc then reconnects with Standard RDP Security is not documented.
        #     The twin says yes unless AuthenticationLevel is 1 ("Do not connect"): the
        #     other levels accept a server that cannot be authenticated.
        # (c) SecurityLayer 0 with UserAuthentication 1 (a policy layer over a local NLA
        #     setting, or both local) is not documented. NLA is CredSSP inside TLS, so the
        #     twin lets the layer win: Standard RDP Security, NLA not enforced.
        if auth.value == win.SERVER_AUTH_REQUIRE:
            return run.failed(
                "x224",
                "server answered RDP_NEG_FAILURE SSL_NOT_ALLOWED_BY_SERVER (0x2); the client"
                " requires server authentication (AuthenticationLevel=1) and will not fall"
                " back to Standard RDP Security",
                SSL_NOT_ALLOWED_BY_SERVER,
            )
        ignored = f"; {nla.describe('UserAuthentication')} not enforced" if nla.value else ""
        run.passed(
            "x224",
            "SSL_NOT_ALLOWED_BY_SERVER; client reconnected with Standard RDP Security"
            f" ({auth.describe('AuthenticationLevel')}){ignored}",
        )
        run.result.notes.append("server identity not verified (Standard RDP Security)")
        selected = PROTOCOL_RDP
    else:
        selected = PROTOCOL_HYBRID if CLIENT_REQUEST & PROTOCOL_HYBRID else PROTOCOL_SSL
        if nla.value and not CLIENT_REQUEST & PROTOCOL_HYBRID:
            return run.failed("x224", "HYBRID_REQUIRED_BY_SERVER (0x5)", HYBRID_REQUIRED_BY_SERVER)
        run.passed("x224", f"RDP_NEG_RSP selectedProtocol=0x{selected:x}")

    # 4. TLS
    if selected != PROTOCOL_RDP:
        cert, why = host.tls_certificate()
        if cert is None:
            return run.failed("tls", f"TLS handshake failed: {why}")
        cdp = cert.get("cdp") or []
        check = policy.revocation_check(client.lookup)
        if cdp and check.value != 0:
            for url in cdp:
                probe = client.probe_url(url)
                if not probe["reachable"]:
                    return run.failed(
                        "tls",
                        f"revocation check failed for {cert['thumbprint']}: {url}:"
                        f" {probe['detail']}",
                    )
        elif cdp:
            run.result.notes.append("revocation check skipped: AllowCertRevocationCheck=0")
        if router is not None and net.client_site == "vpn":
            stall = path_mtu_blackhole(router, flight_bytes(host, cert["thumbprint"]))
            if stall:
                return run.failed("tls", stall)
        run.passed("tls", f"TLS with {cert['subject']} ({cert['thumbprint'][:12]}...): {why}")

    # 5. CredSSP / NLA
    if selected == PROTOCOL_HYBRID:
        c_level = _level(client)
        h_level = _level(host)
        if not credssp.allowed(c_level, h_level):
            return run.failed(
                "credssp",
                f"CredSSP refused: client '{c_level}' vs host '{h_level}' (KB 4093492 matrix)",
            )
        run.passed("credssp", f"CredSSP client '{c_level}' / host '{h_level}'")

    # 6. licensing
    from rdplab import mslicensing

    problems = mslicensing.problems(client.registry_view([win.MSLICENSING_KEY]))
    if problems:
        return run.failed("licensing", f"client licensing store corrupt: {'; '.join(problems)}")
    note = client.run_client()
    run.passed("licensing", note or "client license store healthy")
    run.result.ok = True
    return run.result


#: What a TLS server flight adds to the certificate itself (ServerHello, the key exchange,
#: record and handshake headers): the lab's estimate for its own listener (rdplab.serve,
#: TLS 1.2/1.3 with one certificate), not a protocol constant.
TLS_FLIGHT_OVERHEAD = 400
IP_TCP_HEADERS = 40  # IPv4 and TCP headers without options (RFC 791, RFC 9293)


def flight_bytes(host: Twin, thumbprint: str) -> int:
    """The size of the host's TLS server flight: its certificate (DER) plus the rest."""
    entry = host.certs.find(thumbprint)
    der = len(entry.cert.public_bytes(Encoding.DER)) if entry is not None else 0
    return der + TLS_FLIGHT_OVERHEAD


def path_mtu_blackhole(router: RouterTwin, flight: int) -> str | None:
    """Why the TLS handshake stalls on a VPN path, or None when the flight gets through.

    Both ends announce an MSS of their interface MTU (1500) minus 40, so the host sends
    full-size segments. If the flight needs a segment larger than the tunnel's MTU, the
    router cannot forward it; path MTU discovery (RFC 1191) needs the router's ICMP
    fragmentation-needed to reach the host. Dropped, the host retransmits the same size
    until the client gives up: TCP and X.224 worked, TLS never completes. An MSS clamp on
    the router (or a client tunnel MTU at or below the path's) keeps segments small."""
    if router.link_mtu >= ETHERNET_MTU or router.icmp_frag_needed or router.mss_clamp:
        return None
    segment = min(flight, ETHERNET_MTU - IP_TCP_HEADERS) + IP_TCP_HEADERS
    if segment <= router.link_mtu:
        return None
    return (
        f"TLS handshake stalled: the host's server flight ({flight} bytes) goes out in"
        f" {segment}-byte packets, larger than the VPN path's MTU {router.link_mtu}; the"
        " router drops them and its ICMP fragmentation-needed is dropped too (a path MTU"
        " black hole), so the client gives up waiting"
    )


def _level(twin: Twin) -> str:
    if not win.credssp_patched(twin.tspkg_version):
        return credssp.NOT_UPDATED
    value = int(policy.encryption_oracle(twin.lookup).value)
    return win.ORACLE_NAMES.get(value, credssp.MITIGATED)
