"""rdplab's RDP listener (``rdplab.serve``) playing each host of the lab file: the live
probe, dialing it over real sockets, sees what the connection model says the host's own
state does to a connection."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from rdplab import credssp_wire
from rdplab.lab import load_lab
from rdplab.probe import probe
from rdplab.serve import (
    STATUS_LOGON_FAILURE,
    Behaviour,
    RDPServer,
    behaviour_for,
    broken_host,
    confirm,
    host_alone,
    host_side,
    ntlm_challenge,
    serving,
)

pytestmark = pytest.mark.winrm_loopback  # the loopback network suite (no sshd needed)

REPO = Path(__file__).resolve().parents[2]
LAB = load_lab(REPO / "labs" / "rdp-0x904.yaml")
HOST_SIDE = [s for s in LAB.scenarios if host_side(s)]


def program(sc: object) -> str | None:
    from rdplab import windows as win

    return win.WS_PROGRAM if sc.network.transport == "websocket" else None  # type: ignore[attr-defined]


@pytest.mark.parametrize("sc", [LAB.scenario("healthy"), *HOST_SIDE], ids=lambda s: s.id)
def test_probe_sees_what_the_host_alone_does(sc: object) -> None:
    """Every host-side scenario of the lab file (and the healthy one): the probe fails at
    the stage the connection model gives for a healthy client and this host, and a host
    without the 2018 CredSSP update answers a CredSSP version below 5."""
    host = broken_host(sc)
    net = sc.network  # type: ignore[attr-defined]
    model = host_alone(sc, host)
    behaviour = behaviour_for(host, net.target_port, program(sc))
    with serving(behaviour=behaviour) as server:
        result = probe("127.0.0.1", server.port, timeout=0.5)
    seen = result.failed_stage
    if seen is None and result.credssp_version is not None:
        seen = "credssp" if result.credssp_version < credssp_wire.FIXED_VERSION else None
    expected = model.failed_stage
    if any("Standard RDP Security" in n for n in model.notes):
        # a client at baseline falls back to Standard RDP Security; the probe asks for TLS
        # or CredSSP only and stops at the negotiation failure
        expected = "x224"
    assert seen == expected, (behaviour.reason, result.to_json(), model.to_json())
    assert behaviour.reason
    if seen is None:
        # the host's own certificate, key and all, from its 'Remote Desktop' store
        cert, _ = host.tls_certificate()
        assert f"thumbprint {cert['thumbprint']}" in result.stages[3].detail
        assert behaviour.identity is not None and "host's certificate" in behaviour.identity.source


def test_every_failure_mode_is_played() -> None:
    """The lab's host-side faults between them make the server refuse, drop, fail the
    negotiation, abandon TLS and announce an unpatched CredSSP version."""
    played = set()
    for sc in HOST_SIDE:
        b = behaviour_for(broken_host(sc), sc.network.target_port, program(sc))
        played.add(b.listener if b.listener != "open" else b.mode)
        if b.mode == "negotiate" and b.credssp_version < 5:
            played.add("unpatched-credssp")
    assert played >= {"closed", "drop", "failure", "tls-reset", "unpatched-credssp"}


def test_logon_always_fails_after_the_first_credssp_round() -> None:
    """A client that goes on to authenticate gets STATUS_LOGON_FAILURE in a TSRequest
    errorCode ([MS-CSSP] 2.2.1), as a Windows server answers a wrong password."""
    with serving(behaviour=Behaviour(credssp_version=6)) as server:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        raw.sendall(bytes.fromhex("030000130ee000000000000100080003000000"))
        assert raw.recv(19)[11:12] == b"\x02"  # RDP_NEG_RSP
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(credssp_wire.ts_request())
            answer = tls.recv(4096)
            assert credssp_wire.ts_request_version(answer) == 6
            assert b"NTLMSSP\x00\x02\x00\x00\x00" in answer
            tls.sendall(credssp_wire.ts_request(6, b"NTLMSSP\x00\x03\x00\x00\x00" + b"\0" * 60))
            refusal = tls.recv(4096)
    assert refusal == credssp_wire.ts_error(6, STATUS_LOGON_FAILURE)
    assert refusal.endswith(bytes.fromhex("a4060204c000006d"))
    assert server.seen.authentications == 1 and server.ts_requests == [6]


def test_tls_reset_ends_the_handshake() -> None:
    with serving(behaviour=Behaviour("tls-reset")) as server:
        result = probe("127.0.0.1", server.port, timeout=2)
    assert result.failed_stage == "tls"
    assert "connection lost" in result.evidence or "reset" in result.evidence.lower()


def test_challenge_message_layout() -> None:
    """[MS-NLMP] 2.2.1.2: signature, type 2, target name and target info inside the
    message, the server challenge at offset 24."""
    msg = ntlm_challenge()
    assert msg[:12] == b"NTLMSSP\x00\x02\x00\x00\x00"
    name_len, _, name_off = (
        int.from_bytes(msg[12:14], "little"),
        0,
        int.from_bytes(msg[16:20], "little"),
    )
    assert msg[name_off : name_off + name_len].decode("utf-16-le") == "RDPLAB"
    info_len = int.from_bytes(msg[40:42], "little")
    info_off = int.from_bytes(msg[44:48], "little")
    assert info_off + info_len == len(msg)
    assert msg[-4:] == b"\x00\x00\x00\x00"  # MsvAvEOL
    assert msg[24:32] != ntlm_challenge()[24:32]  # a fresh challenge each time


def test_port_zero_picks_a_free_port_and_stop_frees_it() -> None:
    with serving(port=0) as server:
        port = server.port
        assert port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(bytes.fromhex("030000130ee000000000000100080003000000"))
            assert s.recv(19) == confirm(bytes.fromhex("0203080002000000"))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


@pytest.mark.parametrize(
    ("behaviour", "requested", "answer"),
    [
        (Behaviour(), 0x3, (0x2, 0)),
        (Behaviour(), 0x1, (0x1, 0)),
        (Behaviour(nla=True), 0x1, (0x0, 0x5)),  # HYBRID_REQUIRED_BY_SERVER
        (Behaviour(security_layer=2), 0x0, (0x0, 0x1)),  # SSL_REQUIRED_BY_SERVER
        (Behaviour(security_layer=1), 0x0, (0x0, 0)),  # Negotiate accepts RDP security
        (Behaviour("failure", code=0x2, security_layer=0), 0x3, (0x0, 0x2)),
        (Behaviour("failure", code=0x2, security_layer=0), 0x0, (0x0, 0)),
    ],
)
def test_negotiation_answers(behaviour: Behaviour, requested: int, answer: tuple[int, int]) -> None:
    """[MS-RDPBCGR] 2.2.1.2.2's failure codes read for the host's SecurityLayer and NLA
    setting; checked on the wire, not only in the table."""
    request = bytes.fromhex("030000130ee0000000000001000800") + requested.to_bytes(4, "little")
    with (
        serving(behaviour=behaviour) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as s,
    ):
        s.sendall(request)
        reply = s.recv(19)
    selected, code = answer
    kind, value = (3, code) if code else (2, selected)
    assert reply[11] == kind and int.from_bytes(reply[15:19], "little") == value, reply.hex()


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = RDPServer("::1", 0)
    except OSError as exc:
        pytest.skip(f"cannot listen on ::1 here: {exc}")
    with server:
        result = probe("::1", server.port, timeout=5)
    assert result.ok and result.credssp_version == 6, result.to_json()
