"""The live RDP probe against rdplab's own RDP listener (``rdplab.serve.RDPServer``).

The server is a real TCP listener on 127.0.0.1 that reads the client's X.224 Connection
Request and answers as a Windows RDP listener would (RDP_NEG_RSP, a real TLS handshake,
the first CredSSP round) or plays a failure the probe must name: RDP_NEG_FAILURE with a
code, garbage, silence, a closed socket, a TLS handshake that is not TLS. It is also the
host's RDP port in the inventory provider's end-to-end run (test_provider_inventory.py)
and what ``rdplab serve`` runs.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

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
from rdplab.serve import Behaviour, Mode, RDPServer, confirm, serving

pytestmark = pytest.mark.winrm_loopback  # the loopback network suite (no sshd needed)

_confirm = confirm


@contextmanager
def rdp_responder(mode: Mode = "negotiate", code: int = 0, **kw: int) -> Iterator[RDPServer]:
    with serving(behaviour=Behaviour(mode, code=code, **kw)) as server:  # type: ignore[arg-type]
        yield server


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
def test_negotiation_and_tls() -> None:
    with rdp_responder() as r:
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
def test_credssp_version_is_read_without_credentials(server_version: int, patched: bool) -> None:
    """With CredSSP selected, the probe sends the first TSRequest (an NTLM negotiate that
    names nobody) and reads the server's CredSSP version from its answer."""
    with rdp_responder(credssp_version=server_version) as r:
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


def test_credssp_silence_is_noted_not_failed() -> None:
    with rdp_responder(credssp_version=0) as r:  # hangs up after reading the TSRequest
        result = probe("127.0.0.1", r.port, timeout=2)
    assert result.ok and result.credssp_version is None
    assert any(n.startswith("credssp: no version from") for n in result.notes), result.notes


def test_tls_only_request() -> None:
    with rdp_responder() as r:
        result = probe("127.0.0.1", r.port, requested=PROTOCOL_SSL)
        assert r.requested() == PROTOCOL_SSL
    assert result.ok
    assert "selectedProtocol=0x1 PROTOCOL_SSL (TLS)" in result.stages[2].detail
    assert set(result.not_probed) == {"licensing"}  # no CredSSP when TLS alone was chosen


def test_client_resolution_evidence_is_used() -> None:
    with rdp_responder() as r:
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
def test_negotiation_failure(code: int, name: str) -> None:
    with rdp_responder("failure", code) as r:
        result = probe("127.0.0.1", r.port)
    assert not result.ok
    assert result.failed_stage == "x224"
    assert result.negotiation_failure == code
    assert (result.error_code, result.extended_code) == SOCKET_CLOSED
    assert result.evidence == (
        f"127.0.0.1:{r.port} answered RDP_NEG_FAILURE {name} (0x{code:x}) to requestedProtocols 0x3"
    )
    assert result.not_probed == {}


def test_legacy_server_selects_standard_rdp_security() -> None:
    with rdp_responder("legacy") as r:
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


def test_no_answer_times_out() -> None:
    with rdp_responder("silent") as r:
        result = probe("127.0.0.1", r.port, timeout=0.5)
    assert (result.ok, result.failed_stage) == (False, "x224")
    assert result.evidence == f"127.0.0.1:{r.port} sent no X.224 Connection Confirm within 0.5s"


def test_garbage_answer() -> None:
    with rdp_responder("garbage") as r:
        result = probe("127.0.0.1", r.port)
    assert (result.ok, result.failed_stage) == (False, "x224")
    assert result.evidence == (
        f"127.0.0.1:{r.port} answered something that is not an X.224 Connection Confirm:"
        " not a TPKT (version 3) packet"
    )


def test_closed_without_answer() -> None:
    with rdp_responder("close") as r:
        result = probe("127.0.0.1", r.port)
    assert result.failed_stage == "x224"
    assert result.evidence == (
        f"127.0.0.1:{r.port} closed the connection instead of an X.224 Connection Confirm"
    )


def test_tls_handshake_failure() -> None:
    with rdp_responder("no-tls") as r:
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


def test_tcp_only_reports_the_rest_as_not_probed() -> None:
    with rdp_responder("silent") as r:
        result = probe("127.0.0.1", r.port, tcp_only="WebSocket")
    assert result.ok
    assert [s.name for s in result.stages] == ["name-resolution", "tcp"]
    assert result.not_probed == dict.fromkeys(("x224", "tls", "credssp", "licensing"), "WebSocket")


def test_listener_refuses_and_drops_then_opens_again() -> None:
    with rdp_responder() as r:
        r.set_listener("closed")
        assert probe("127.0.0.1", r.port).evidence.startswith("connection to 127.0.0.1:")
        r.set_listener("drop")
        dropped = probe("127.0.0.1", r.port, timeout=0.5)
        assert dropped.evidence == f"SYN to 127.0.0.1:{r.port} timed out after 0.5s"
        r.set_listener("open")
        assert probe("127.0.0.1", r.port).ok
