"""A live RDP connection probe from Python: name resolution, TCP, X.224, TLS.

What mstsc does first, up to the point where credentials would be needed:

1. resolve the name (or take the client's own answer, gathered from its facts),
2. open TCP to the RDP port,
3. send an X.224 Connection Request carrying an RDP_NEG_REQ ([MS-RDPBCGR] 2.2.1.1 and
   2.2.1.1.1; requestedProtocols PROTOCOL_SSL | PROTOCOL_HYBRID by default) and read the
   X.224 Connection Confirm with its RDP_NEG_RSP or RDP_NEG_FAILURE (2.2.1.2, 2.2.1.2.1,
   2.2.1.2.2),
4. when the server selected TLS or CredSSP, do the TLS handshake on the same socket and
   report the server certificate (not validated: mstsc decides about trust and revocation
   on the client, which this probe is not).

CredSSP/NLA needs credentials and licensing needs a session: both are reported as
``not_probed`` with the reason, never as passed. The result is the connection model's
``ConnectionResult`` (same stages, same 0x904/0x7 codes on failure); every message names
host:port.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import threading
import time
from typing import Any

from rdplab import credssp_wire
from rdplab.connection import (
    HYBRID_REQUIRED_BY_SERVER,
    PROTOCOL_HYBRID,
    PROTOCOL_HYBRID_EX,
    PROTOCOL_RDP,
    PROTOCOL_SSL,
    SSL_CERT_NOT_ON_SERVER,
    SSL_NOT_ALLOWED_BY_SERVER,
    SSL_REQUIRED_BY_SERVER,
    ConnectionResult,
    _Run,
)

DEFAULT_REQUEST = PROTOCOL_SSL | PROTOCOL_HYBRID
DEFAULT_TIMEOUT = 5.0

TYPE_RDP_NEG_REQ, TYPE_RDP_NEG_RSP, TYPE_RDP_NEG_FAILURE = 0x01, 0x02, 0x03
X224_CR, X224_CC = 0xE0, 0xD0
FAILURE_NAMES = {
    SSL_REQUIRED_BY_SERVER: "SSL_REQUIRED_BY_SERVER",
    SSL_NOT_ALLOWED_BY_SERVER: "SSL_NOT_ALLOWED_BY_SERVER",
    SSL_CERT_NOT_ON_SERVER: "SSL_CERT_NOT_ON_SERVER",
    0x4: "INCONSISTENT_FLAGS",
    HYBRID_REQUIRED_BY_SERVER: "HYBRID_REQUIRED_BY_SERVER",
    0x6: "SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER",
}
PROTOCOL_NAMES = {
    PROTOCOL_RDP: "PROTOCOL_RDP (Standard RDP Security)",
    PROTOCOL_SSL: "PROTOCOL_SSL (TLS)",
    PROTOCOL_HYBRID: "PROTOCOL_HYBRID (CredSSP)",
    PROTOCOL_HYBRID_EX: "PROTOCOL_HYBRID_EX (CredSSP with Early User Authorization)",
}
NOT_PROBED = {
    "credssp": "CredSSP/NLA needs the user's credentials; the probe does not authenticate",
    "licensing": "licensing happens inside a logged-on session; the probe never gets there",
}
_MAX_SHOWN = 16  # bytes of an unexpected answer quoted in the evidence


class _BadAnswerError(Exception):
    pass


def connection_request(requested: int = DEFAULT_REQUEST, cookie: str = "") -> bytes:
    """TPKT + X.224 Class 0 Connection Request + RDP_NEG_REQ (2.2.1.1)."""
    data = f"Cookie: mstshash={cookie}\r\n".encode() if cookie else b""
    neg = struct.pack("<BBHI", TYPE_RDP_NEG_REQ, 0, 8, requested)
    x224 = bytes([6 + len(data) + len(neg), X224_CR]) + b"\x00\x00" + b"\x00\x00" + b"\x00"
    body = x224 + data + neg
    return struct.pack(">BBH", 3, 0, 4 + len(body)) + body


def parse_confirm(packet: bytes) -> tuple[str, int]:
    """Read an X.224 Connection Confirm: ("selected", protocol) or ("failure", code).

    A confirm without negotiation data is a server that does not negotiate: Standard RDP
    Security (2.2.1.2). Raises _BadAnswerError for anything else."""
    if len(packet) < 11 or packet[0] != 3:
        raise _BadAnswerError("not a TPKT (version 3) packet")
    (length,) = struct.unpack(">H", packet[2:4])
    if length != len(packet):
        raise _BadAnswerError(f"TPKT length {length} does not match {len(packet)} bytes")
    li, code = packet[4], packet[5] & 0xF0
    if code != X224_CC:
        raise _BadAnswerError(f"X.224 TPDU code 0x{code:02x} is not a Connection Confirm (0xd0)")
    if li + 5 != len(packet):
        raise _BadAnswerError(f"X.224 length indicator {li} does not match the packet")
    neg = packet[11:]
    if not neg:
        return "selected", PROTOCOL_RDP
    if len(neg) != 8:
        raise _BadAnswerError(f"negotiation data is {len(neg)} bytes, not 8")
    kind, _flags, neg_len, value = struct.unpack("<BBHI", neg)
    if neg_len != 8:
        raise _BadAnswerError(f"negotiation length field is {neg_len}, not 8")
    if kind == TYPE_RDP_NEG_RSP:
        return "selected", value
    if kind == TYPE_RDP_NEG_FAILURE:
        return "failure", value
    raise _BadAnswerError(f"negotiation type 0x{kind:02x} is neither RDP_NEG_RSP nor FAILURE")


def _read_tpkt(sock: socket.socket, deadline: float) -> bytes:
    head = _read(sock, 4, deadline)
    if head[0] != 3:
        raise _BadAnswerError("not a TPKT (version 3) packet")
    (length,) = struct.unpack(">H", head[2:4])
    if not 11 <= length <= 64:
        raise _BadAnswerError(f"TPKT length {length} is not a Connection Confirm's")
    return head + _read(sock, length - 4, deadline)


def _read(sock: socket.socket, n: int, deadline: float) -> bytes:
    got = b""
    while len(got) < n:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(n - len(got))
        if not chunk:
            raise ConnectionResetError("closed")
        got += chunk
    return got


def probe(
    address: str,
    port: int,
    *,
    resolution: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    requested: int = DEFAULT_REQUEST,
    server_name: str | None = None,
    tcp_only: str | None = None,
) -> ConnectionResult:
    """Probe the RDP listener at address:port.

    ``resolution`` is the evidence of how the client resolved the host's name (the stage
    passes with it); without it, ``address`` is resolved here, from Python on this machine,
    and the evidence says so. ``server_name`` goes into TLS SNI. ``tcp_only`` (a reason)
    stops after TCP and reports the later stages as not probed for that reason."""
    run = _Run()
    where = f"{address}:{port}"
    if resolution is not None:
        run.passed("name-resolution", resolution)
        target = address
    else:
        try:
            target = _resolve(address, port, timeout)
        except (socket.gaierror, UnicodeError, TimeoutError) as exc:
            why = f"no answer within {timeout:g}s" if isinstance(exc, TimeoutError) else exc
            return run.failed(
                "name-resolution",
                f"{address} does not resolve (resolved from Python on the machine running"
                f" rdplab, not by the client): {why}",
            )
        run.passed(
            "name-resolution",
            f"{address} -> {target} (resolved from Python on the machine running rdplab,"
            " not by the client)",
        )

    # TCP
    try:
        sock = socket.create_connection((target, port), timeout=timeout)
    except ConnectionRefusedError:
        return run.failed("tcp", f"connection to {where} refused (nothing listens on the port)")
    except TimeoutError:
        return run.failed("tcp", f"SYN to {where} timed out after {timeout:g}s")
    except OSError as exc:
        return run.failed("tcp", f"cannot connect to {where}: {exc.strerror or exc}")
    with sock:
        run.passed("tcp", f"connected to {where}")
        if tcp_only is not None:
            for stage in ("x224", "tls", *NOT_PROBED):
                run.result.not_probed[stage] = tcp_only
            run.result.notes.append(f"x224, tls, credssp, licensing: not probed ({tcp_only})")
            run.result.ok = True
            return run.result
        # X.224
        deadline = time.monotonic() + timeout
        try:
            sock.sendall(connection_request(requested))
            kind, value = parse_confirm(_read_tpkt(sock, deadline))
        except TimeoutError:
            return run.failed(
                "x224", f"{where} sent no X.224 Connection Confirm within {timeout:g}s"
            )
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            return run.failed(
                "x224", f"{where} closed the connection instead of an X.224 Connection Confirm"
            )
        except _BadAnswerError as exc:
            return run.failed(
                "x224", f"{where} answered something that is not an X.224 Connection Confirm: {exc}"
            )
        except OSError as exc:
            return run.failed("x224", f"X.224 negotiation with {where} failed: {exc}")
        if kind == "failure":
            name = FAILURE_NAMES.get(value, "unknown failure code")
            return run.failed(
                "x224",
                f"{where} answered RDP_NEG_FAILURE {name} (0x{value:x}) to requestedProtocols"
                f" 0x{requested:x}",
                value,
            )
        if value != PROTOCOL_RDP and not value & requested:
            return run.failed(
                "x224", f"{where} selected protocol 0x{value:x}, which was not requested"
            )
        run.result.selected_protocol = value
        run.passed(
            "x224",
            f"{where} RDP_NEG_RSP selectedProtocol=0x{value:x}"
            f" {PROTOCOL_NAMES.get(value, '')}".rstrip(),
        )
        if value == PROTOCOL_RDP:
            run.result.notes.append(
                "server selected Standard RDP Security: no TLS, server identity not verified"
            )
        else:
            # TLS
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # reported, not judged: trust is the client's call
            credssp: int | str | None = None
            try:
                sock.settimeout(timeout)  # each stage gets the whole timeout
                with ctx.wrap_socket(sock, server_hostname=server_name) as tls:
                    der = tls.getpeercert(binary_form=True) or b""
                    version = tls.version() or "TLS"
                    if value & (PROTOCOL_HYBRID | PROTOCOL_HYBRID_EX):
                        credssp = _credssp_version(tls, time.monotonic() + timeout)
            except TimeoutError:
                return run.failed("tls", f"TLS handshake with {where} timed out")
            except ssl.SSLError as exc:
                return run.failed("tls", f"TLS handshake with {where} failed: {exc.reason or exc}")
            except OSError as exc:
                return run.failed(
                    "tls", f"TLS handshake with {where} failed: connection lost ({exc})"
                )
            run.passed("tls", f"{version} with {where}: {_describe_cert(der)}")
            run.result.peer_certificate = der
            if isinstance(credssp, int):
                run.result.credssp_version = credssp
                run.result.notes.append(
                    f"credssp: {where} answered TSRequest version {credssp}"
                    + (
                        " (with the 2018 CredSSP update)"
                        if credssp >= credssp_wire.FIXED_VERSION
                        else " (without the 2018 CredSSP update, CVE-2018-0886)"
                    )
                )
            elif credssp is not None:
                run.result.notes.append(f"credssp: no version from {where}: {credssp}")
            run.result.notes.append(
                "tls: the certificate is reported, not validated (trust and revocation are"
                " checked by mstsc on the client)"
            )
    for stage, why in NOT_PROBED.items():
        if stage == "credssp" and not value & (PROTOCOL_HYBRID | PROTOCOL_HYBRID_EX):
            continue
        run.result.not_probed[stage] = why
        run.result.notes.append(f"{stage}: not probed ({why})")
    run.result.ok = True
    return run.result


def _credssp_version(tls: ssl.SSLSocket, deadline: float) -> int | str:
    """Send the first TSRequest and read the server's: its CredSSP version, or why not.
    No credential is sent (the NTLM NEGOTIATE_MESSAGE names nobody)."""
    try:
        tls.settimeout(max(0.001, deadline - time.monotonic()))
        tls.sendall(credssp_wire.ts_request())
        data = b""
        while (need := credssp_wire.message_length(data)) is None or len(data) < need:
            if need is not None and need > 65536:
                return f"a {need}-byte answer is not a TSRequest"
            chunk = tls.recv(4096 if need is None else need - len(data))
            if not chunk:
                return "the server closed the connection instead of answering the TSRequest"
            data += chunk
        return credssp_wire.ts_request_version(data)
    except TimeoutError:
        return "no TSRequest answer in time"
    except credssp_wire.WireError as exc:
        return f"the answer is not a TSRequest ({exc})"
    except (ssl.SSLError, OSError) as exc:
        return f"the connection failed during the TSRequest exchange ({exc})"


def _resolve(address: str, port: int, timeout: float) -> str:
    """The first address of ``address``, from this machine's resolver, within ``timeout``
    (getaddrinfo has no timeout of its own: it runs in a daemon thread, left behind when
    the resolver is silent)."""
    answer: list[Any] = []

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(address, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # handed to the caller below
            answer.append(exc)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    if not answer:
        raise TimeoutError
    if isinstance(answer[0], Exception):
        raise answer[0]
    return str(answer[0][0][4][0])


def certificate_info(der: bytes | None) -> dict[str, Any] | None:
    """The server certificate as reported (not judged): ``sha1`` (upper-case hex of the
    DER bytes: Windows' thumbprint), ``subject``, ``issuer``, ``not_after`` (ISO 8601,
    UTC) and ``self_signed`` (issuer is subject and its own key verifies the signature);
    the fields other than ``sha1`` are None when the certificate does not parse."""
    if not der:
        return None
    info: dict[str, Any] = {
        "sha1": hashlib.sha1(der).hexdigest().upper(),
        "subject": None,
        "issuer": None,
        "not_after": None,
        "self_signed": None,
    }
    try:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        info["subject"] = cert.subject.rfc4514_string()
        info["issuer"] = cert.issuer.rfc4514_string()
        info["not_after"] = cert.not_valid_after_utc.isoformat()
    except Exception:  # any parse failure: still report the thumbprint
        return info
    try:
        cert.verify_directly_issued_by(cert)
        info["self_signed"] = True
    except Exception:  # another issuer, or a signature its own key does not verify
        info["self_signed"] = False
    return info


def _describe_cert(der: bytes) -> str:
    info = certificate_info(der)
    if info is None:
        return "no server certificate"
    if info["subject"] is None:
        return f"certificate {info['sha1']} (unparseable)"
    subject = info["subject"] or "(empty subject)"
    until = str(info["not_after"])[:10]
    return f"certificate {subject}, thumbprint {info['sha1']}, valid until {until}"


__all__ = [
    "DEFAULT_REQUEST",
    "FAILURE_NAMES",
    "certificate_info",
    "connection_request",
    "parse_confirm",
    "probe",
]
