"""The live RDP probe against a loopback X.224/TLS responder.

``RDPResponder`` is a real TCP server on 127.0.0.1 that reads the client's X.224
Connection Request (TPKT framing, RDP_NEG_REQ) and answers as a Windows RDP listener
would: an X.224 Connection Confirm with RDP_NEG_RSP (then a real TLS handshake with a
self-signed certificate made by ``cryptography``), or RDP_NEG_FAILURE with a code, or
the misbehaviours the probe must name: garbage, silence, a closed socket. It is also the
"host RDP port" of the inventory provider's end-to-end run (test_provider_inventory.py).
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from rdplab import credssp_wire
from rdplab.catalog.base import SOCKET_CLOSED
from rdplab.connection import (
    HYBRID_REQUIRED_BY_SERVER,
    PROTOCOL_HYBRID,
    PROTOCOL_RDP,
    PROTOCOL_SSL,
    SSL_NOT_ALLOWED_BY_SERVER,
    SSL_REQUIRED_BY_SERVER,
)
from rdplab.probe import connection_request, parse_confirm, probe

pytestmark = pytest.mark.winrm_loopback  # the loopback network suite (no sshd needed)


def make_cert(
    directory: Path, common_name: str = "HOST", cdp: tuple[str, ...] = ()
) -> tuple[Path, Path, str]:
    """A self-signed server certificate like the one TermService makes, or, with ``cdp``,
    one carrying those CRL Distribution Points as a CA-issued one would; (cert, key, SHA-1)."""
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
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "rdp.pem", directory / "rdp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, cert.fingerprint(hashes.SHA1()).hex().upper()


class RDPResponder:
    """An RDP listener on 127.0.0.1. ``mode``: ``negotiate`` (RDP_NEG_RSP picking CredSSP
    when asked, else TLS; then TLS), ``failure`` (RDP_NEG_FAILURE ``code``), ``legacy``
    (a Connection Confirm without negotiation data), ``garbage`` (an HTTP answer),
    ``silent`` (reads, never answers), ``close`` (closes after reading), ``no-tls``
    (selects TLS, then sends plain bytes instead of a ServerHello). ``set_listener`` and
    ``follow`` (a host twin's listener) also make it refuse or drop connections."""

    def __init__(self, directory: Path, mode: str = "negotiate", code: int = 0) -> None:
        self.mode = mode
        self.code = code
        self.directory = directory
        self.cdp: tuple[str, ...] = ()
        #: the CredSSP version answered to a TSRequest (0: close instead, as a non-CredSSP
        #: server would); the versions the clients announced
        self.credssp_version = 6
        self.ts_requests: list[int] = []
        self.cert, self.key, self.thumbprint = make_cert(directory)
        self.requests: list[bytes] = []
        self.handshakes = 0
        self.handshake_done = threading.Event()
        self.listener = "open"
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._filler: socket.socket | None = None
        self._sock: socket.socket | None = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._thread: threading.Thread | None = None

    def start(self) -> RDPResponder:
        self._accept()
        return self

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

    def set_listener(self, state: str) -> None:
        """``open`` (accepts and answers), ``closed`` (nothing listens: refused) or
        ``drop`` (a full accept queue: further SYNs are dropped, the connect times out)."""
        if state == self.listener:
            return
        self._close_listener()
        self.listener = state
        if state == "closed":
            return
        self._sock = socket.create_server(("127.0.0.1", self.port), backlog=0)
        if state == "open":
            self._accept()
        else:
            self._filler = socket.create_connection(("127.0.0.1", self.port), timeout=2)

    def follow(self, twin: Any, port: int, program: str | None = None) -> None:
        """Behave like the RDP listener of ``twin`` (a host twin) on ``port``: refused when
        nothing listens there, dropped by its inbound firewall, SSL_NOT_ALLOWED_BY_SERVER
        when its security layer is Standard RDP Security, a broken TLS handshake when it has
        no usable certificate, else negotiation and TLS."""
        from rdplab import policy
        from rdplab import windows as win

        if port not in twin.listening():
            self.set_listener("closed")
            return
        if not twin.firewall.evaluate("In", "TCP", port, program or win.TS_PROGRAM).allowed:
            self.set_listener("drop")
            return
        self.set_listener("open")
        if int(policy.security_layer(twin.lookup).value) == win.SECURITY_LAYER_RDP:
            self.mode, self.code = "failure", SSL_NOT_ALLOWED_BY_SERVER
        elif twin.tls_certificate()[0] is None:
            self.mode = "no-tls"
        else:
            self.mode = "negotiate"
            # a host without the 2018 CredSSP update answers an older TSRequest version
            # (any below 5; 3 here)
            self.credssp_version = 6 if win.credssp_patched(twin.tspkg_version) else 3
            # present the twin certificate's CRL locations (the twin keeps no private key
            # to serve the certificate itself), so the client-side revocation check has
            # the same URLs to fetch as against the real host
            cdp = tuple(twin.tls_certificate()[0].get("cdp") or ())
            if cdp != self.cdp:
                self.cdp = cdp
                self.cert, self.key, self.thumbprint = make_cert(self.directory, cdp=cdp)

    def stop(self) -> None:
        self._stop.set()
        self._close_listener()
        for c in self._conns:
            with suppress(OSError):
                c.close()

    def _serve(self, sock: socket.socket | None) -> None:
        while sock is not None and not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def requested(self) -> int:
        """requestedProtocols of the last Connection Request."""
        return int(struct.unpack("<I", self.requests[-1][-4:])[0])

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            head = conn.recv(4)
            (length,) = struct.unpack(">H", head[2:4])
            body = b""
            while len(body) < length - 4:
                body += conn.recv(length - 4 - len(body))
            self.requests.append(head + body)
            requested = struct.unpack("<I", body[-4:])[0]
            if self.mode == "silent":
                self._stop.wait(30)
                return
            if self.mode == "close":
                return
            if self.mode == "garbage":
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            if self.mode == "legacy":
                conn.sendall(_confirm(b""))
                return
            if self.mode == "failure":
                conn.sendall(_confirm(struct.pack("<BBHI", 3, 0, 8, self.code)))
                return
            selected = PROTOCOL_HYBRID if requested & PROTOCOL_HYBRID else PROTOCOL_SSL
            conn.sendall(_confirm(struct.pack("<BBHI", 2, 0, 8, selected)))
            if self.mode == "no-tls":
                conn.sendall(b"\x03\x00\x00\x0bnot tls at all")
                return
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert, self.key)
            with ctx.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                self.handshake_done.set()
                tls.settimeout(2)
                with suppress(OSError, credssp_wire.WireError):
                    first = tls.recv(4096)  # a TSRequest, or the client hangs up
                    if first and selected & PROTOCOL_HYBRID and self.credssp_version:
                        self.ts_requests.append(credssp_wire.ts_request_version(first))
                        challenge = b"NTLMSSP\x00\x02\x00\x00\x00" + b"\x00" * 40
                        tls.sendall(credssp_wire.ts_request(self.credssp_version, challenge))
                        tls.recv(1)
        except (OSError, struct.error):
            pass
        finally:
            with suppress(OSError):
                conn.close()


def _confirm(neg: bytes) -> bytes:
    x224 = bytes([6 + len(neg), 0xD0]) + b"\x00\x00" + b"\x12\x34" + b"\x00"
    body = x224 + neg
    return struct.pack(">BBH", 3, 0, 4 + len(body)) + body


@contextmanager
def rdp_responder(
    directory: Path, mode: str = "negotiate", code: int = 0
) -> Iterator[RDPResponder]:
    r = RDPResponder(directory, mode, code).start()
    try:
        yield r
    finally:
        r.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the packets --------------------------------------------------------------------------------
def test_connection_request_bytes() -> None:
    """[MS-RDPBCGR] 4.1.1's example shape: TPKT, X.224 CR (LI 14), RDP_NEG_REQ."""
    assert connection_request(PROTOCOL_SSL | PROTOCOL_HYBRID) == bytes.fromhex(
        "0300 0013 0e e0 0000 0000 00 01 00 0800 03000000".replace(" ", "")
    )
    with_cookie = connection_request(PROTOCOL_SSL, cookie="eltons")
    assert with_cookie[11:32] == b"Cookie: mstshash=eltons\r\n"[:21]
    assert len(with_cookie) == struct.unpack(">H", with_cookie[2:4])[0]


def test_parse_confirm() -> None:
    assert parse_confirm(_confirm(struct.pack("<BBHI", 2, 0x1F, 8, 2))) == ("selected", 2)
    assert parse_confirm(_confirm(struct.pack("<BBHI", 3, 0, 8, 5))) == ("failure", 5)
    assert parse_confirm(_confirm(b"")) == ("selected", PROTOCOL_RDP)


# -- live -----------------------------------------------------------------------------------------
def test_negotiation_and_tls(tmp_path: Path) -> None:
    with rdp_responder(tmp_path) as r:
        result = probe("127.0.0.1", r.port, timeout=5)
        assert r.requested() == PROTOCOL_SSL | PROTOCOL_HYBRID
        assert r.handshake_done.wait(5) and r.handshakes == 1
    assert result.ok, result.to_json()
    assert [(s.name, s.ok) for s in result.stages] == [
        ("name-resolution", True),
        ("tcp", True),
        ("x224", True),
        ("tls", True),
    ]
    where = f"127.0.0.1:{r.port}"
    assert (
        "resolved from Python on the machine running rdplab, not by the client"
        in result.stages[0].detail
    )
    assert result.stages[2].detail == (
        f"{where} RDP_NEG_RSP selectedProtocol=0x2 PROTOCOL_HYBRID (CredSSP)"
    )
    tls = result.stages[3].detail
    assert tls.startswith("TLSv1.") and f"with {where}: certificate CN=HOST" in tls
    assert f"thumbprint {r.thumbprint}" in tls
    assert set(result.not_probed) == {"credssp", "licensing"}
    assert any(n.startswith("credssp: not probed") for n in result.notes)
    assert result.failed_stage is None and result.error_code is None


@pytest.mark.parametrize(("server_version", "patched"), [(6, True), (5, True), (3, False)])
def test_credssp_version_is_read_without_credentials(
    tmp_path: Path, server_version: int, patched: bool
) -> None:
    """With CredSSP selected, the probe sends the first TSRequest (an NTLM negotiate that
    names nobody) and reads the server's CredSSP version from its answer."""
    with rdp_responder(tmp_path) as r:
        r.credssp_version = server_version
        result = probe("127.0.0.1", r.port, timeout=5)
    assert result.ok, result.to_json()
    assert r.ts_requests == [6]
    assert result.credssp_version == server_version
    assert result.to_json()["credssp_version"] == server_version
    update = "with the 2018 CredSSP update" if patched else "without the 2018 CredSSP update"
    assert f"credssp: 127.0.0.1:{r.port} answered TSRequest version {server_version}" in (
        " ".join(result.notes)
    )
    assert update in " ".join(result.notes)
    assert "credssp" in result.not_probed  # authentication itself needs credentials


def test_credssp_silence_is_noted_not_failed(tmp_path: Path) -> None:
    with rdp_responder(tmp_path) as r:
        r.credssp_version = 0  # hangs up after reading the TSRequest
        result = probe("127.0.0.1", r.port, timeout=2)
    assert result.ok and result.credssp_version is None
    assert any(n.startswith("credssp: no version from") for n in result.notes), result.notes


def test_tls_only_request(tmp_path: Path) -> None:
    with rdp_responder(tmp_path) as r:
        result = probe("127.0.0.1", r.port, requested=PROTOCOL_SSL)
        assert r.requested() == PROTOCOL_SSL
    assert result.ok
    assert "selectedProtocol=0x1 PROTOCOL_SSL (TLS)" in result.stages[2].detail
    assert set(result.not_probed) == {"licensing"}  # no CredSSP when TLS alone was chosen


def test_client_resolution_evidence_is_used(tmp_path: Path) -> None:
    with rdp_responder(tmp_path) as r:
        result = probe("127.0.0.1", r.port, resolution="host.rdplab.test -> 127.0.0.1 (hosts)")
    assert result.stages[0].detail == "host.rdplab.test -> 127.0.0.1 (hosts)"


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (SSL_REQUIRED_BY_SERVER, "SSL_REQUIRED_BY_SERVER"),
        (SSL_NOT_ALLOWED_BY_SERVER, "SSL_NOT_ALLOWED_BY_SERVER"),
        (HYBRID_REQUIRED_BY_SERVER, "HYBRID_REQUIRED_BY_SERVER"),
        (0x6, "SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER"),
        (0x99, "unknown failure code"),
    ],
)
def test_negotiation_failure(tmp_path: Path, code: int, name: str) -> None:
    with rdp_responder(tmp_path, "failure", code) as r:
        result = probe("127.0.0.1", r.port)
    assert not result.ok
    assert result.failed_stage == "x224"
    assert result.negotiation_failure == code
    assert (result.error_code, result.extended_code) == SOCKET_CLOSED
    assert result.evidence == (
        f"127.0.0.1:{r.port} answered RDP_NEG_FAILURE {name} (0x{code:x}) to requestedProtocols 0x3"
    )
    assert result.not_probed == {}


def test_legacy_server_selects_standard_rdp_security(tmp_path: Path) -> None:
    with rdp_responder(tmp_path, "legacy") as r:
        result = probe("127.0.0.1", r.port)
    assert result.ok
    assert [s.name for s in result.stages] == ["name-resolution", "tcp", "x224"]
    assert "selectedProtocol=0x0 PROTOCOL_RDP" in result.stages[2].detail
    assert any("no TLS, server identity not verified" in n for n in result.notes)


def test_connection_refused() -> None:
    port = free_port()
    result = probe("127.0.0.1", port)
    assert (result.ok, result.failed_stage) == (False, "tcp")
    assert (
        result.evidence == f"connection to 127.0.0.1:{port} refused (nothing listens on the port)"
    )
    assert (result.error_code, result.extended_code) == SOCKET_CLOSED


def test_tcp_timeout() -> None:
    """A listener whose accept queue is full drops further SYNs: the connect times out."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as full:
        port = full.getsockname()[1]
        held = [socket.create_connection(("127.0.0.1", port), timeout=1)]
        try:
            result = probe("127.0.0.1", port, timeout=0.5)
        finally:
            for s in held:
                s.close()
    assert (result.ok, result.failed_stage) == (False, "tcp")
    assert result.evidence == f"SYN to 127.0.0.1:{port} timed out after 0.5s"


def test_no_answer_times_out(tmp_path: Path) -> None:
    with rdp_responder(tmp_path, "silent") as r:
        result = probe("127.0.0.1", r.port, timeout=0.5)
    assert (result.ok, result.failed_stage) == (False, "x224")
    assert result.evidence == f"127.0.0.1:{r.port} sent no X.224 Connection Confirm within 0.5s"


def test_garbage_answer(tmp_path: Path) -> None:
    with rdp_responder(tmp_path, "garbage") as r:
        result = probe("127.0.0.1", r.port)
    assert (result.ok, result.failed_stage) == (False, "x224")
    assert result.evidence == (
        f"127.0.0.1:{r.port} answered something that is not an X.224 Connection Confirm:"
        " not a TPKT (version 3) packet"
    )


def test_closed_without_answer(tmp_path: Path) -> None:
    with rdp_responder(tmp_path, "close") as r:
        result = probe("127.0.0.1", r.port)
    assert result.failed_stage == "x224"
    assert result.evidence == (
        f"127.0.0.1:{r.port} closed the connection instead of an X.224 Connection Confirm"
    )


def test_tls_handshake_failure(tmp_path: Path) -> None:
    with rdp_responder(tmp_path, "no-tls") as r:
        result = probe("127.0.0.1", r.port)
    assert (result.ok, result.failed_stage) == (False, "tls")
    assert result.evidence.startswith(f"TLS handshake with 127.0.0.1:{r.port} failed")
    assert [s.ok for s in result.stages] == [True, True, True, False]


def test_name_does_not_resolve() -> None:
    result = probe("no-such-host.invalid", 3389)
    assert result.failed_stage == "name-resolution"
    assert result.evidence.startswith(
        "no-such-host.invalid does not resolve (resolved from Python on the machine running rdplab"
    )


def test_tcp_only_reports_the_rest_as_not_probed(tmp_path: Path) -> None:
    with rdp_responder(tmp_path, "silent") as r:
        result = probe("127.0.0.1", r.port, tcp_only="WebSocket")
    assert result.ok
    assert [s.name for s in result.stages] == ["name-resolution", "tcp"]
    assert result.not_probed == dict.fromkeys(("x224", "tls", "credssp", "licensing"), "WebSocket")


def test_listener_refuses_and_drops_then_opens_again(tmp_path: Path) -> None:
    with rdp_responder(tmp_path) as r:
        r.set_listener("closed")
        assert probe("127.0.0.1", r.port).evidence.startswith("connection to 127.0.0.1:")
        r.set_listener("drop")
        dropped = probe("127.0.0.1", r.port, timeout=0.5)
        assert dropped.evidence == f"SYN to 127.0.0.1:{r.port} timed out after 0.5s"
        r.set_listener("open")
        assert probe("127.0.0.1", r.port).ok
