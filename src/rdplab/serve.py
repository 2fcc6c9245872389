"""An RDP listener on a real socket that answers as a host twin's state says.

``RDPServer`` accepts TCP connections, reads the client's X.224 Connection Request (TPKT,
RDP_NEG_REQ) and answers as the Remote Desktop listener of a Windows host would
([MS-RDPBCGR] 2.2.1.2, 3.3.5.3): an X.224 Connection Confirm with RDP_NEG_RSP, then TLS
with the host's certificate, then the first CredSSP exchange ([MS-CSSP] 3.1.5) carrying
the CredSSP version of the host's patch level. It authenticates nobody: the client's NTLM
AUTHENTICATE message is answered with STATUS_LOGON_FAILURE. Or it plays a failure: nothing
listening, a silently dropped SYN, RDP_NEG_FAILURE with a code, a TLS handshake the server
abandons, and the misbehaviours a probe must name (garbage, silence, a closed socket).

``behaviour_for(twin, port)`` reads a host twin and says what its listener does;
``RDPServer.follow`` plays it. ``rdplab serve`` (cli/serve.py), the loopback lab providers
and the live probe's tests all use this one implementation.

    with serving(port=0) as server:        # 127.0.0.1, a free port
        server.play(Behaviour("failure", code=SSL_NOT_ALLOWED_BY_SERVER))
        probe("127.0.0.1", server.port)

Where the sources are silent, the choice is said where it is made (``tls-reset``,
``LEGACY_NOTE``).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from rdplab import credssp_wire

Listener = Literal["open", "closed", "drop"]
#: What an open listener does with a connection.
#: ``negotiate``: RDP_NEG_RSP (CredSSP when asked, else TLS), TLS, the first CredSSP round,
#: then STATUS_LOGON_FAILURE; ``failure``: RDP_NEG_FAILURE ``code``, then close;
#: ``legacy``: a Connection Confirm without negotiation data (Standard RDP Security);
#: ``tls-reset``: RDP_NEG_RSP, then the TLS handshake is abandoned after the ClientHello
#: (a TCP reset); ``no-tls``: RDP_NEG_RSP, then bytes that are not TLS; ``garbage``: an
#: HTTP answer; ``silent``: reads, never answers; ``close``: closes after reading.
Mode = Literal[
    "negotiate", "failure", "legacy", "tls-reset", "no-tls", "garbage", "silent", "close"
]
MODES: tuple[str, ...] = Mode.__args__  # type: ignore[attr-defined]

PROTOCOL_RDP, PROTOCOL_SSL, PROTOCOL_HYBRID = 0x0, 0x1, 0x2
SSL_REQUIRED_BY_SERVER, HYBRID_REQUIRED_BY_SERVER = 0x1, 0x5  # [MS-RDPBCGR] 2.2.1.2.2
#: [MS-ERREF] 2.3.1: the NTSTATUS a Windows server answers a wrong user name or password
#: with; [MS-CSSP] 2.2.1 carries it in the TSRequest's errorCode (version 3 and later).
STATUS_LOGON_FAILURE = 0xC000006D
#: the CredSSP version a patched host answers ([MS-CSSP] 2.2.1: the newest, 6) and the one
#: an unpatched host answers (below 5, the first with the CVE-2018-0886 fix: 3 here;
#: docs/sources.md section 12)
PATCHED_CREDSSP_VERSION, UNPATCHED_CREDSSP_VERSION = 6, 3
#: Standard RDP Security (MCS, GCC and RSA key exchange) is not implemented: after selecting
#: PROTOCOL_RDP the server closes the connection.
LEGACY_NOTE = "Standard RDP Security is not implemented by rdplab serve: it closes here"


@dataclass(frozen=True)
class Identity:
    """The certificate the listener presents and its private key (PEM), with where they
    came from."""

    cert_pem: bytes
    key_pem: bytes
    source: str

    @property
    def thumbprint(self) -> str:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        return (
            x509.load_pem_x509_certificate(self.cert_pem).fingerprint(hashes.SHA1()).hex().upper()
        )


@dataclass(frozen=True)
class Behaviour:
    """What the listener does, and why (one line a person reads)."""

    mode: Mode = "negotiate"
    listener: Listener = "open"
    code: int = 0
    credssp_version: int = PATCHED_CREDSSP_VERSION
    identity: Identity | None = None
    reason: str = ""
    #: the host's SecurityLayer (0 RDP, 1 Negotiate, 2 SSL) and whether it requires NLA
    #: (UserAuthentication=1): what it answers a client that does not ask for CredSSP
    security_layer: int = 2
    nla: bool = False

    @property
    def stage(self) -> str | None:
        """The connection stage a client sees fail (None: the server goes on to NLA)."""
        if self.listener != "open":
            return "tcp"
        return {
            "failure": "x224",
            "garbage": "x224",
            "silent": "x224",
            "close": "x224",
            "legacy": "x224",
            "tls-reset": "tls",
            "no-tls": "tls",
        }.get(self.mode)


def make_identity(common_name: str = "HOST", cdp: tuple[str, ...] = ()) -> Identity:
    """A self-signed server certificate like the one TermService makes (or, with ``cdp``,
    one carrying those CRL Distribution Points as a CA-issued one would)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=180))
    )
    if cdp:
        points = [
            x509.DistributionPoint([x509.UniformResourceIdentifier(u)], None, None, None)
            for u in cdp
        ]
        builder = builder.add_extension(x509.CRLDistributionPoints(points), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return Identity(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        f"a stand-in self-signed certificate CN={common_name}",
    )


def behaviour_for(twin: Any, port: int, program: str | None = None) -> Behaviour:
    """What the Remote Desktop listener of ``twin`` (a host twin) does on ``port``:
    nothing listens (refused) when RDP is off, TermService stopped or the listener on
    another port; the inbound firewall drops the SYN; SecurityLayer=0 answers
    SSL_NOT_ALLOWED_BY_SERVER to a client asking for TLS or CredSSP; no usable certificate
    abandons the TLS handshake; else negotiation, TLS with the certificate from the
    'Remote Desktop' store (or the bound one) and the CredSSP version of its patch level."""
    from rdplab import policy
    from rdplab import windows as win
    from rdplab.connection import SSL_NOT_ALLOWED_BY_SERVER

    verdict = twin.firewall.evaluate("In", "TCP", port, program or win.TS_PROGRAM)
    if not verdict.allowed:  # dropped before anything could answer, listener or not
        return Behaviour(listener="drop", reason=f"the inbound firewall drops it: {verdict.reason}")
    listening = twin.listening()
    if port not in listening:
        why = []
        if not twin.services.running(win.TERMSERVICE):
            why.append("TermService is stopped")
        deny = policy.deny_ts_connections(twin.lookup)
        if deny.value != 0:
            why.append(deny.describe("fDenyTSConnections"))
        if listening:
            why.append(f"the listener is on {sorted(listening)}")
        return Behaviour(listener="closed", reason=f"nothing listens on {port}: {'; '.join(why)}")
    layer = int(policy.security_layer(twin.lookup).value)
    nla = bool(int(policy.user_authentication(twin.lookup).value))
    if layer == win.SECURITY_LAYER_RDP:
        return Behaviour(
            "failure",
            code=SSL_NOT_ALLOWED_BY_SERVER,
            security_layer=layer,
            reason="SecurityLayer=0 (Standard RDP Security only): RDP_NEG_FAILURE"
            " SSL_NOT_ALLOWED_BY_SERVER to a client asking for TLS or CredSSP",
        )
    cert, why = twin.tls_certificate()
    if cert is None:
        return Behaviour(
            "tls-reset",
            security_layer=layer,
            nla=nla,
            reason=f"no usable certificate ({why}): TLS fails",
        )
    patched = win.credssp_patched(twin.tspkg_version)
    version = PATCHED_CREDSSP_VERSION if patched else UNPATCHED_CREDSSP_VERSION
    return Behaviour(
        "negotiate",
        credssp_version=version,
        identity=twin_identity(twin, cert),
        security_layer=layer,
        nla=nla,
        reason=f"TLS with {cert['subject']} ({why}); CredSSP version {version}"
        f" ({'with' if patched else 'without'} the 2018 CredSSP update)",
    )


_stand_in = lru_cache(maxsize=8)(make_identity)


def twin_identity(twin: Any, cert: dict[str, Any]) -> Identity:
    """The twin's own certificate and its key, when this process made that key (the twin's
    keys come from a pool, twin/certs.py); else a stand-in with the same subject and CRL
    locations, so a client's revocation check fetches the same URLs."""
    from cryptography.hazmat.primitives import serialization

    from rdplab.twin.certs import machine_key

    entry = twin.certs.find(cert["thumbprint"])
    key = machine_key(entry.cert) if entry is not None else None
    if entry is None or key is None:
        common_name = cert["subject"].split("CN=", 1)[-1].split(",", 1)[0]
        return _stand_in(common_name, tuple(cert.get("cdp") or ()))
    return Identity(
        entry.pem.encode(),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        f"the host's certificate {cert['thumbprint']}",
    )


@dataclass
class Seen:
    """What clients sent (for tests and the serve command's log)."""

    requests: list[bytes] = field(default_factory=list)
    ts_requests: list[int] = field(default_factory=list)
    handshakes: int = 0
    authentications: int = 0


class RDPServer:
    """An RDP listener on ``address``:``port`` (0: a free port, read ``.port`` after
    construction). ``start`` serves, ``play``/``follow`` change what it does (also while
    serving), ``stop`` closes everything. ``on_event`` receives one line per connection
    step (the serve command prints them)."""

    def __init__(
        self,
        address: str = "127.0.0.1",
        port: int = 0,
        behaviour: Behaviour | None = None,
        on_event: Any = None,
    ) -> None:
        self.address = address
        self.behaviour = Behaviour()
        self.seen = Seen()
        self.handshake_done = threading.Event()
        self.on_event = on_event
        self._dir = Path(tempfile.mkdtemp(prefix="rdplab-serve-"))
        self._default = make_identity()
        self._ctx: ssl.SSLContext | None = None
        self._ctx_for: Identity | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._filler: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._sock: socket.socket | None = socket.create_server(
            (address, port), family=self._family
        )
        self.port = int(self._sock.getsockname()[1])
        self.listener: Listener = "open"
        if behaviour is not None:
            self.play(behaviour)

    # -- what tests read -------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.behaviour.mode

    @property
    def identity(self) -> Identity:
        return self.behaviour.identity or self._default

    @property
    def thumbprint(self) -> str:
        return self.identity.thumbprint

    @property
    def requests(self) -> list[bytes]:
        return self.seen.requests

    @property
    def ts_requests(self) -> list[int]:
        return self.seen.ts_requests

    @property
    def handshakes(self) -> int:
        return self.seen.handshakes

    def requested(self) -> int:
        """requestedProtocols of the last Connection Request."""
        return int(struct.unpack("<I", self.seen.requests[-1][-4:])[0])

    # -- control ---------------------------------------------------------------------------
    def start(self) -> RDPServer:
        self._started = True
        if self.listener == "open":
            self._accept()
        return self

    def play(self, behaviour: Behaviour) -> None:
        """Answer the next connections this way."""
        self.behaviour = behaviour
        self.set_listener(behaviour.listener)

    def follow(self, twin: Any, port: int, program: str | None = None) -> Behaviour:
        """Play the listener of ``twin`` on ``port`` (``behaviour_for``)."""
        behaviour = behaviour_for(twin, port, program)
        self.play(behaviour)
        return behaviour

    def set_listener(self, state: Listener) -> None:
        """``open`` (accepts and answers), ``closed`` (nothing listens: refused) or
        ``drop`` (a full accept queue: further SYNs are dropped, the connect times out)."""
        if state == self.listener:
            return
        self._close_listener()
        self.listener = state
        if state == "closed":
            return
        self._sock = socket.create_server((self.address, self.port), family=self._family, backlog=0)
        if state == "open":
            if self._started:
                self._accept()
        else:
            # the kernel's backlog is min(backlog, somaxconn) + 1: fill it
            self._filler = socket.create_connection((self.address, self.port), timeout=2)

    def stop(self) -> None:
        self._stop.set()
        self._close_listener()
        for c in list(self._conns):
            with suppress(OSError):
                c.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RDPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the listener ----------------------------------------------------------------------
    def _accept(self) -> None:
        self._thread = threading.Thread(target=self._serve, args=(self._sock,), daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        sock, self._sock = self._sock, None
        for s in (sock, self._filler):
            if s is not None:
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        self._filler = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _serve(self, sock: socket.socket | None) -> None:
        while sock is not None and not self._stop.is_set():
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn, peer), daemon=True).start()

    def _event(self, peer: Any, text: str) -> None:
        if self.on_event is not None:
            self.on_event(f"{peer[0]}:{peer[1]} {text}")

    def _tls_context(self, identity: Identity) -> ssl.SSLContext:
        with self._lock:
            if self._ctx is None or self._ctx_for != identity:
                cert, key = self._dir / "rdp.pem", self._dir / "rdp.key"
                cert.write_bytes(identity.cert_pem)
                fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(identity.key_pem)
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(cert, key)
                self._ctx, self._ctx_for = ctx, identity
            return self._ctx

    def _handle(self, conn: socket.socket, peer: Any) -> None:
        b = self.behaviour
        try:
            conn.settimeout(10)
            request = _read_tpkt(conn)
            self.seen.requests.append(request)
            requested = struct.unpack("<I", request[-4:])[0] if len(request) >= 19 else 0
            self._event(peer, f"X.224 Connection Request, requestedProtocols=0x{requested:x}")
            if b.mode == "silent":
                self._stop.wait(30)
                return
            if b.mode == "close":
                return
            if b.mode == "garbage":
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            if b.mode == "legacy":
                conn.sendall(confirm(b""))
                self._event(peer, f"Connection Confirm without negotiation; {LEGACY_NOTE}")
                return
            selected, code = _select(b, requested)
            if code:
                conn.sendall(confirm(struct.pack("<BBHI", 3, 0, 8, code)))
                self._event(peer, f"RDP_NEG_FAILURE 0x{code:x}, closed")
                return
            conn.sendall(confirm(_neg_rsp(selected)))
            if selected == PROTOCOL_RDP:
                self._event(peer, f"RDP_NEG_RSP selectedProtocol=0x0; {LEGACY_NOTE}")
                return
            self._event(peer, f"RDP_NEG_RSP selectedProtocol=0x{selected:x}")
            if b.mode == "no-tls":
                conn.sendall(b"\x03\x00\x00\x0bnot tls at all")
                return
            if b.mode == "tls-reset":
                # Microsoft documents the server side (Schannel event 36870: the TLS server
                # credential's private key cannot be used) but not what goes on the wire; a
                # server that cannot make a ServerHello ends the connection: rdplab reads
                # the ClientHello and resets (sources are silent; docs/sources.md s6).
                conn.recv(16384)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self._event(peer, "ClientHello read; connection reset (no ServerHello)")
                return
            self._tls(conn, peer, b, selected)
        except (OSError, struct.error, ValueError):
            pass
        finally:
            with suppress(OSError):
                conn.close()
            with suppress(ValueError):
                self._conns.remove(conn)

    def _tls(self, conn: socket.socket, peer: Any, b: Behaviour, selected: int) -> None:
        ctx = self._tls_context(b.identity or self._default)
        with ctx.wrap_socket(conn, server_side=True) as tls:
            self.seen.handshakes += 1
            self.handshake_done.set()
            self._event(peer, f"TLS {tls.version()} with {(b.identity or self._default).source}")
            if not selected & PROTOCOL_HYBRID or not b.credssp_version:
                with suppress(OSError):
                    tls.settimeout(2)
                    tls.recv(1)
                return
            tls.settimeout(15)  # a real client computing NTLM on a busy machine
            with suppress(OSError, credssp_wire.WireError):
                first = _read_der(tls)
                if not first:
                    return
                self.seen.ts_requests.append(credssp_wire.ts_request_version(first))
                tls.sendall(credssp_wire.ts_request(b.credssp_version, ntlm_challenge()))
                self._event(peer, f"CredSSP: answered TSRequest version {b.credssp_version}")
                second = _read_der(tls)
                if not second:
                    return
                self.seen.authentications += 1
                if b.credssp_version >= 3:  # errorCode exists from version 3 ([MS-CSSP] 2.2.1)
                    tls.sendall(credssp_wire.ts_error(b.credssp_version, STATUS_LOGON_FAILURE))
                self._event(peer, "CredSSP: authenticates nobody: STATUS_LOGON_FAILURE")
                time.sleep(0.2)


def _select(b: Behaviour, requested: int) -> tuple[int, int]:
    """(selectedProtocol, failureCode) for a Connection Request, as [MS-RDPBCGR] 3.3.5.3.2
    and the failure codes of 2.2.1.2.2 read for the host's settings: CredSSP when asked
    for; else HYBRID_REQUIRED_BY_SERVER when NLA is required; else TLS when asked for;
    Standard RDP Security only at SecurityLayer 0 or 1 (Negotiate), otherwise
    SSL_REQUIRED_BY_SERVER; a SecurityLayer 0 host fails every TLS or CredSSP request
    with ``code`` (SSL_NOT_ALLOWED_BY_SERVER)."""
    if b.mode == "failure":
        if requested == PROTOCOL_RDP and b.security_layer == 0:
            return PROTOCOL_RDP, 0
        return PROTOCOL_RDP, b.code
    if requested & PROTOCOL_HYBRID:
        return PROTOCOL_HYBRID, 0
    if b.nla:
        return PROTOCOL_RDP, HYBRID_REQUIRED_BY_SERVER
    if requested & PROTOCOL_SSL:
        return PROTOCOL_SSL, 0
    if b.security_layer in (0, 1):
        return PROTOCOL_RDP, 0
    return PROTOCOL_RDP, SSL_REQUIRED_BY_SERVER


def _read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _read_tpkt(conn: socket.socket) -> bytes:
    head = _read_exact(conn, 4)
    (length,) = struct.unpack(">H", head[2:4])
    return head + _read_exact(conn, max(0, length - 4))


def _read_der(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while (need := credssp_wire.message_length(data)) is None or len(data) < need:
        chunk = tls.recv(4096 if need is None else need - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def _neg_rsp(selected: int) -> bytes:
    # flags: EXTENDED_CLIENT_DATA_SUPPORTED | DYNVC_GFX_PROTOCOL_SUPPORTED, as Windows
    # servers send them ([MS-RDPBCGR] 2.2.1.2.1)
    return struct.pack("<BBHI", 2, 0x03, 8, selected)


def confirm(neg: bytes) -> bytes:
    """An X.224 Connection Confirm ([MS-RDPBCGR] 2.2.1.2) carrying ``neg``."""
    x224 = bytes([6 + len(neg), 0xD0]) + b"\x00\x00" + b"\x12\x34" + b"\x00"
    body = x224 + neg
    return struct.pack(">BBH", 3, 0, 4 + len(body)) + body


def ntlm_challenge(computer: str = "HOST", domain: str = "RDPLAB") -> bytes:
    """An NTLM CHALLENGE_MESSAGE ([MS-NLMP] 2.2.1.2) with a random server challenge and the
    target information a Windows server sends (names, a timestamp), so a real client goes
    on to compute its AUTHENTICATE_MESSAGE."""
    target = domain.encode("utf-16-le")
    filetime = int((time.time() + 11644473600) * 10_000_000)

    def av(av_id: int, value: bytes) -> bytes:
        return struct.pack("<HH", av_id, len(value)) + value

    info = (
        av(2, target)  # MsvAvNbDomainName
        + av(1, computer.encode("utf-16-le"))  # MsvAvNbComputerName
        + av(4, f"{domain.lower()}.test".encode("utf-16-le"))  # MsvAvDnsDomainName
        + av(3, f"{computer.lower()}.{domain.lower()}.test".encode("utf-16-le"))
        + av(7, struct.pack("<Q", filetime))  # MsvAvTimestamp
        + av(0, b"")  # MsvAvEOL
    )
    # UNICODE, REQUEST_TARGET, SIGN, SEAL, NTLM, ALWAYS_SIGN, TARGET_TYPE_DOMAIN,
    # EXTENDED_SESSIONSECURITY, TARGET_INFO, VERSION, 128, KEY_EXCH, 56
    flags = (
        0x00000001
        | 0x00000004
        | 0x00000010
        | 0x00000020
        | 0x00000200
        | 0x00008000
        | 0x00010000
        | 0x00080000
        | 0x00800000
        | 0x02000000
        | 0x20000000
        | 0x40000000
        | 0x80000000
    )
    header = 8 + 4 + 8 + 4 + 8 + 8 + 8 + 8  # through the Version field: 56 bytes
    version = bytes([10, 0]) + struct.pack("<H", 20348) + b"\x00\x00\x00\x0f"
    return (
        b"NTLMSSP\x00"
        + struct.pack("<I", 2)
        + struct.pack("<HHI", len(target), len(target), header)
        + struct.pack("<I", flags)
        + os.urandom(8)
        + b"\x00" * 8
        + struct.pack("<HHI", len(info), len(info), header + len(target))
        + version
        + target
        + info
    )


@contextmanager
def serving(
    address: str = "127.0.0.1", port: int = 0, behaviour: Behaviour | None = None
) -> Iterator[RDPServer]:
    """An ``RDPServer`` that is started on entry and stopped on exit."""
    server = RDPServer(address, port, behaviour).start()
    try:
        yield server
    finally:
        server.stop()


def broken_host(scenario: Any) -> Any:
    """The scenario's host twin with the scenario's faults in place (the ``BREAK`` steps on
    the sim provider)."""
    from rdplab.backends.sim import SimBackend
    from rdplab.errors import RdplabError
    from rdplab.providers.sim import SimProvider
    from rdplab.scenario import BREAK, run_scenario

    run = run_scenario(SimProvider(), scenario, BREAK)
    if run.error:
        raise RdplabError(f"scenario {scenario.id}: {run.failed_step} failed: {run.error}")
    host = run.lab.host
    assert isinstance(host, SimBackend)
    return host.twin


def host_side(scenario: Any) -> bool:
    """Whether a fault of the scenario is placed on the host or changes it (a host-side
    scenario: what ``rdplab serve`` has to show)."""
    return any(
        pf.placement.on == "host" or pf.placement.breaks.get("host") for pf in scenario.faults
    )


def host_alone(scenario: Any, host: Any) -> Any:
    """The connection model's verdict for a client at its healthy baseline dialing ``host``:
    what the host's own state does to a connection (the client's faults left out, as a
    real client pointed at ``rdplab serve`` brings its own state)."""
    from rdplab.connection import connect
    from rdplab.providers.sim import scenario_twin

    net = scenario.network
    return connect(scenario_twin(scenario, "client"), host, net, net.host_address)
