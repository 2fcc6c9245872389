"""The connection model, stage by stage: where each failure stops and the evidence it gives."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from rdplab import mslicensing
from rdplab import windows as win
from rdplab.connection import SSL_NOT_ALLOWED_BY_SERVER, ConnectionResult, connect
from rdplab.network import Network
from rdplab.ops import Op
from rdplab.twin import Twin
from rdplab.twin.certs import RD_STORE

ALL_STAGES = ["name-resolution", "tcp", "x224", "tls", "credssp", "licensing"]
Apply = Callable[..., Any]


def dword(key: str, name: str, data: int) -> Op:
    return Op("reg.set", {"key": key, "name": name, "type": "REG_DWORD", "data": data})


def failed(result: ConnectionResult, stage: str, *evidence: str) -> None:
    __tracebackhide__ = True
    assert not result.ok
    assert result.failed_stage == stage, result.to_json()
    # 0x904/0x7 (socket closed, server denied) everywhere but the CredSSP dialog
    codes = (None, None) if stage == "credssp" else ("0x904", "0x7")
    assert (result.error_code, result.extended_code) == codes
    assert [s.name for s in result.stages] == ALL_STAGES[: ALL_STAGES.index(stage) + 1]
    assert [s.ok for s in result.stages][-1] is False
    assert all(s.ok for s in result.stages[:-1])
    for text in evidence:
        assert text in result.evidence, result.evidence


def test_healthy_connection_passes_every_stage(client: Twin, host: Twin, net: Network) -> None:
    result = connect(client, host, net)
    assert result.ok, result.to_json()
    assert [s.name for s in result.stages] == ALL_STAGES
    assert all(s.ok for s in result.stages)
    assert result.failed_stage is result.error_code is result.negotiation_failure is None
    assert "from dns" in result.stages[0].detail
    assert (
        "RDP-Tcp" in result.stages[1].detail
        and "RemoteDesktop-UserMode-In-TCP" in result.stages[1].detail
    )
    assert "selectedProtocol=0x2" in result.stages[2].detail
    assert "CN=HOST" in result.stages[3].detail
    assert result.notes == []
    # the answer is now cached on the client
    assert client.dns.cache[net.host_name] == net.host_address
    assert "from cache" in connect(client, host, net).stages[0].detail


# -- name resolution / TCP ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _NoDns(Network):
    @property
    def zone(self) -> dict[str, str]:
        return {}


def test_name_not_resolving(client: Twin, host: Twin) -> None:
    result = connect(client, host, _NoDns())
    failed(result, "name-resolution", "host.rdplab.test does not resolve")


def test_client_outbound_block(client: Twin, host: Twin, net: Network, apply_ok: Apply) -> None:
    apply_ok(
        client,
        [
            Op(
                "fw.rule.add",
                {
                    "rule": {
                        "name": "no-rdp-out",
                        "direction": "Out",
                        "action": "Block",
                        "remote_port": "3389",
                    }
                },
            )
        ],
    )
    failed(
        connect(client, host, net), "tcp", "client firewall drops outbound TCP 3389", "no-rdp-out"
    )


def test_client_outbound_default_block(client: Twin, host: Twin, net: Network) -> None:
    client.firewall.profiles["Private"].default_outbound = "Block"
    failed(connect(client, host, net), "tcp", "outbound TCP 3389", "default is Block")


@pytest.mark.parametrize("how", ["hosts.set", "dns.cache.seed"])
def test_stale_address_times_out(
    client: Twin, host: Twin, net: Network, apply_ok: Apply, how: str
) -> None:
    apply_ok(client, [Op(how, {"name": net.host_name, "address": net.stale_address})])
    result = connect(client, host, net)
    source = "hosts" if how == "hosts.set" else "cache"
    assert f"-> {net.stale_address} (from {source})" in result.stages[0].detail
    failed(result, "tcp", f"SYN to {net.stale_address}:3389 timed out", "no machine there", "stale")


def test_stale_address_fixed_by_flush(
    client: Twin, host: Twin, net: Network, apply_ok: Apply
) -> None:
    apply_ok(client, [Op("dns.cache.seed", {"name": net.host_name, "address": net.stale_address})])
    apply_ok(client, [Op("dns.flush", {"name": net.host_name, "expect": net.host_address})])
    assert connect(client, host, net).ok


def test_host_firewall_drop(host: Twin, client: Twin, net: Network, apply_ok: Apply) -> None:
    apply_ok(host, [Op("fw.rule.set", {"match": {"group": win.RD_GROUP}, "enabled": False})])
    failed(
        connect(client, host, net),
        "tcp",
        f"SYN to {net.host_address}:3389 timed out: host firewall",
        "default is Block",
    )


def test_host_block_rule_beats_allow(
    host: Twin, client: Twin, net: Network, apply_ok: Apply
) -> None:
    apply_ok(
        host,
        [Op("fw.rule.add", {"rule": {"name": "blk", "action": "Block", "local_port": "3389"}})],
    )
    failed(connect(client, host, net), "tcp", "host firewall", "blk")


@pytest.mark.parametrize(
    ("scope", "ok"),
    [
        (["LocalSubnet"], True),  # the client is on the host's subnet
        (["192.168.56.10"], True),  # the client's own address
        (["192.168.56.0/25"], True),
        (["10.0.0.0/8"], False),
        (["192.168.56.20-192.168.56.30"], False),
    ],
)
def test_host_rule_remote_address_scope_sees_the_client(
    host: Twin, client: Twin, net: Network, apply_ok: Apply, scope: list[str], ok: bool
) -> None:
    """A Remote Desktop rule lets the client in only from inside its RemoteAddress scope."""
    assert net.client_address == "192.168.56.10"
    rules = [r for r in host.firewall.rules if r.group == win.RD_GROUP]
    apply_ok(
        host, [Op("fw.rule.add", {"rule": {**r.to_json(), "remote_address": scope}}) for r in rules]
    )
    result = connect(client, host, net)
    if ok:
        assert result.ok, result.to_json()
    else:
        failed(result, "tcp", "host firewall", "default is Block")


def test_shadow_rule_does_not_let_rdp_through(
    host: Twin, client: Twin, net: Network, apply_ok: Apply
) -> None:
    """RemoteDesktop-Shadow-In-TCP allows every port, but only to RdpSa.exe."""
    apply_ok(
        host,
        [Op("fw.rule.set", {"match": {"name": "RemoteDesktop-UserMode-In-TCP"}, "enabled": False})],
    )
    shadow = [r for r in host.firewall.rules if r.name == "RemoteDesktop-Shadow-In-TCP"]
    assert shadow and shadow[0].enabled and shadow[0].local_port == ["Any"]
    failed(connect(client, host, net), "tcp", "host firewall")


def test_refused_when_termservice_stopped(
    host: Twin, client: Twin, net: Network, apply_ok: Apply
) -> None:
    apply_ok(host, [Op("svc.stop", {"name": "TermService"})])
    result = connect(client, host, net)
    failed(result, "tcp", "refused", "TermService is stopped")
    assert "fDenyTSConnections" not in result.evidence


@pytest.mark.parametrize(
    ("key", "source"), [(win.TS_KEY, "preference"), (win.TS_POLICY_KEY, "policy")]
)
def test_refused_when_connections_denied(
    host: Twin, client: Twin, net: Network, apply_ok: Apply, key: str, source: str
) -> None:
    apply_ok(host, [dword(key, "fDenyTSConnections", 1)])
    result = connect(client, host, net)
    failed(result, "tcp", "refused", f"fDenyTSConnections=1 ({source})")
    assert "TermService" not in result.evidence


def test_policy_allow_overrides_local_deny(
    host: Twin, client: Twin, net: Network, apply_ok: Apply
) -> None:
    apply_ok(
        host,
        [
            dword(win.TS_KEY, "fDenyTSConnections", 1),
            dword(win.TS_POLICY_KEY, "fDenyTSConnections", 0),
        ],
    )
    assert connect(client, host, net).ok


def test_refused_when_port_moved(host: Twin, client: Twin, net: Network, apply_ok: Apply) -> None:
    apply_ok(host, [dword(win.RDP_TCP_KEY, "PortNumber", 3390)])
    result = connect(client, host, net)
    failed(result, "tcp", "refused", "listening on [3387, 3390, 3392]")
    # a client dialing the new port gets past TCP once the firewall lets it in
    apply_ok(host, [Op("fw.rule.add", {"rule": {"name": "alt", "local_port": "3390"}})])
    assert connect(client, host, Network(port=3390)).ok


# -- X.224 ----------------------------------------------------------------------------------
def test_x224_ssl_not_allowed_when_client_requires_server_auth(
    host: Twin, client: Twin, net: Network, apply_ok: Apply
) -> None:
    apply_ok(host, [dword(win.TS_POLICY_KEY, "SecurityLayer", 0)])
    apply_ok(client, [dword(win.TS_POLICY_KEY, "AuthenticationLevel", 1)])
    result = connect(client, host, net)
    failed(result, "x224", "SSL_NOT_ALLOWED_BY_SERVER (0x2)", "AuthenticationLevel=1")
    assert result.negotiation_failure == SSL_NOT_ALLOWED_BY_SERVER == 0x2


@pytest.mark.parametrize("level", [0, 2, None])
def test_x224_falls_back_to_standard_rdp_security(
    host: Twin, client: Twin, net: Network, apply_ok: Apply, level: int | None
) -> None:
    apply_ok(host, [dword(win.RDP_TCP_KEY, "SecurityLayer", 0)])
    if level is not None:
        apply_ok(client, [dword(win.TS_POLICY_KEY, "AuthenticationLevel", level)])
    # a broken certificate does not matter: there is no TLS
    apply_ok(host, [Op("machinekeys.corrupt", {"store": RD_STORE})])
    result = connect(client, host, net)
    assert result.ok, result.to_json()
    assert [s.name for s in result.stages] == ["name-resolution", "tcp", "x224", "licensing"]
    assert "Standard RDP Security" in result.stages[2].detail
    assert result.notes == ["server identity not verified (Standard RDP Security)"]


def test_x224_negotiate_layer_uses_tls(
    host: Twin, client: Twin, net: Network, apply_ok: Apply
) -> None:
    apply_ok(host, [dword(win.TS_POLICY_KEY, "SecurityLayer", 1)])
    apply_ok(client, [dword(win.TS_POLICY_KEY, "AuthenticationLevel", 1)])
    result = connect(client, host, net)
    assert result.ok and "tls" in [s.name for s in result.stages]


# -- TLS ------------------------------------------------------------------------------------
def test_tls_fails_on_corrupt_key(host: Twin, client: Twin, net: Network, apply_ok: Apply) -> None:
    apply_ok(host, [Op("machinekeys.corrupt", {"store": RD_STORE})])
    failed(
        connect(client, host, net),
        "tls",
        "TLS handshake failed",
        "private key corrupt",
        "MachineKeys",
    )


def test_tls_fails_on_empty_store(host: Twin, client: Twin, net: Network, apply_ok: Apply) -> None:
    apply_ok(host, [Op("cert.remove", {"store": RD_STORE, "which": "all"})])
    failed(connect(client, host, net), "tls", "no certificate in the 'Remote Desktop' store")
    apply_ok(host, [Op("svc.restart", {"name": "TermService"})])
    assert connect(client, host, net).ok


def test_tls_fails_when_bound_cert_is_absent(
    host: Twin, client: Twin, net: Network, apply_ok: Apply
) -> None:
    apply_ok(
        host,
        [
            Op(
                "reg.set",
                {
                    "key": win.RDP_TCP_KEY,
                    "name": "SSLCertificateSHA1Hash",
                    "type": "REG_BINARY",
                    "data": "ab" * 20,
                },
            )
        ],
    )
    failed(
        connect(client, host, net),
        "tls",
        "SSLCertificateSHA1Hash names " + "AB" * 20,
        "no store holds",
    )


SINKHOLE_PKI = Op("hosts.set", {"name": "pki.rdplab.test", "address": "0.0.0.0"})


def test_revocation_failure(bound_host: Twin, client: Twin, net: Network, apply_ok: Apply) -> None:
    apply_ok(client, [SINKHOLE_PKI])
    result = connect(client, bound_host, net)
    failed(
        result,
        "tls",
        f"revocation check failed for {net.issued.thumbprint}",
        net.crl_url,
        "0.0.0.0 (hosts): no answer",
    )


def test_revocation_skipped_when_check_off(
    bound_host: Twin, client: Twin, net: Network, apply_ok: Apply
) -> None:
    apply_ok(client, [SINKHOLE_PKI, dword(win.TS_CLIENT_POLICY_KEY, "AllowCertRevocationCheck", 0)])
    result = connect(client, bound_host, net)
    assert result.ok, result.to_json()
    assert result.notes == ["revocation check skipped: AllowCertRevocationCheck=0"]
    assert "bound by SSLCertificateSHA1Hash" in result.stages[3].detail


def test_revocation_passes_when_crl_reachable(bound_host: Twin, client: Twin, net: Network) -> None:
    result = connect(client, bound_host, net)
    assert result.ok and result.notes == []
    assert "CN=HOST" in result.stages[3].detail
    assert "bound by SSLCertificateSHA1Hash" in result.stages[3].detail


# -- CredSSP / licensing --------------------------------------------------------------------
def test_credssp_blocked(
    make_twin: Callable[..., Twin], client: Twin, net: Network, apply_ok: Apply
) -> None:
    old = make_twin("windows-server-2016-1607", "OLD")
    apply_ok(client, [dword(win.CREDSSP_KEY, "AllowEncryptionOracle", 0)])
    failed(
        connect(client, old, net),
        "credssp",
        "CredSSP refused: client 'Force Updated Clients' vs host 'not updated'",
    )


def test_licensing_corrupt(client: Twin, host: Twin, net: Network, apply_ok: Apply) -> None:
    apply_ok(client, [Op("reg.delete", {"key": win.MSLICENSING_KEY + r"\Store"})])
    failed(
        connect(client, host, net),
        "licensing",
        "client licensing store corrupt",
        "Store subkey missing",
    )
    # a failed connection does not repair the store
    assert client.registry.key(win.MSLICENSING_KEY + r"\Store") is None


def test_mslicensing_recreated_when_absent(
    client: Twin, host: Twin, net: Network, apply_ok: Apply
) -> None:
    apply_ok(client, [Op("reg.delete", {"key": win.MSLICENSING_KEY})])
    result = connect(client, host, net)
    assert result.ok
    assert result.stages[-1].detail == "MSLicensing recreated by the elevated client run"
    view = client.registry_view([win.MSLICENSING_KEY])
    assert mslicensing.problems(view) == []
    hwid = client.registry.get(win.MSLICENSING_KEY + r"\HardwareID", "ClientHWID")
    assert hwid is not None and hwid.type == "REG_BINARY"
    assert len(bytes.fromhex(hwid.data)) == mslicensing.HWID_BYTES
    assert client.registry.key(win.MSLICENSING_KEY + r"\Store") is not None
    again = connect(client, host, net)
    assert again.stages[-1].detail == "client license store healthy"


def test_licensing_clear_then_connect_recovers(
    client: Twin, host: Twin, net: Network, apply_ok: Apply
) -> None:
    apply_ok(
        client,
        [
            Op(
                "reg.set",
                {
                    "key": win.MSLICENSING_KEY + r"\HardwareID",
                    "name": "ClientHWID",
                    "type": "REG_BINARY",
                    "data": "deadbeef",
                },
            )
        ],
    )
    assert connect(client, host, net).failed_stage == "licensing"
    apply_ok(client, [Op("licensing.clear")])
    assert connect(client, host, net).ok


def test_earliest_failure_wins(client: Twin, host: Twin, net: Network, apply_ok: Apply) -> None:
    apply_ok(
        host,
        [Op("machinekeys.corrupt", {"store": RD_STORE}), Op("svc.stop", {"name": "TermService"})],
    )
    apply_ok(client, [Op("reg.delete", {"key": win.MSLICENSING_KEY + r"\Store"})])
    assert connect(client, host, net).failed_stage == "tcp"


# -- WebSocket transport --------------------------------------------------------------------
def test_websocket_uses_3387(client: Twin, host: Twin) -> None:
    ws = Network(transport="websocket")
    assert ws.target_port == 3387
    result = connect(client, host, ws)
    assert result.ok, result.to_json()
    assert f"{ws.host_address}:3387 (RDP WebSocket)" in result.stages[1].detail
    assert "RemoteDesktop-In-TCP-WS" in result.stages[1].detail


def test_websocket_blocked_on_host_while_tcp_works(
    client: Twin, host: Twin, net: Network, apply_ok: Apply
) -> None:
    apply_ok(host, [Op("fw.rule.set", {"match": {"group": win.RD_WS_GROUP}, "enabled": False})])
    failed(
        connect(client, host, Network(transport="websocket")),
        "tcp",
        ":3387 timed out: host firewall",
    )
    assert connect(client, host, net).ok


def test_websocket_blocked_on_client(client: Twin, host: Twin, apply_ok: Apply) -> None:
    apply_ok(
        client,
        [
            Op(
                "fw.rule.add",
                {
                    "rule": {
                        "name": "ws-out",
                        "direction": "Out",
                        "action": "Block",
                        "remote_port": "3387,3392",
                    }
                },
            )
        ],
    )
    failed(
        connect(client, host, Network(transport="websocket")), "tcp", "outbound TCP 3387", "ws-out"
    )


@pytest.mark.parametrize(("program", "ok"), [("System", True), (win.TS_PROGRAM, False)])
def test_websocket_traffic_belongs_to_program_system(
    client: Twin, host: Twin, apply_ok: Apply, program: str, ok: bool
) -> None:
    apply_ok(
        host,
        [
            Op("fw.rule.set", {"match": {"group": win.RD_WS_GROUP}, "enabled": False}),
            Op(
                "fw.rule.add",
                {"rule": {"name": "ws-scoped", "local_port": "3387", "program": program}},
            ),
        ],
    )
    assert connect(client, host, Network(transport="websocket")).ok is ok


def test_tcp_traffic_belongs_to_svchost(
    client: Twin, host: Twin, net: Network, apply_ok: Apply
) -> None:
    apply_ok(
        host,
        [
            Op("fw.rule.set", {"match": {"group": win.RD_GROUP}, "enabled": False}),
            Op(
                "fw.rule.add",
                {"rule": {"name": "sys-3389", "local_port": "3389", "program": "System"}},
            ),
        ],
    )
    failed(connect(client, host, net), "tcp", "host firewall")


def test_result_to_json(client: Twin, host: Twin, net: Network, apply_ok: Apply) -> None:
    apply_ok(host, [Op("svc.stop", {"name": "TermService"})])
    data = connect(client, host, net).to_json()
    assert data["ok"] is False and data["failed_stage"] == "tcp"
    assert data["error_code"] == "0x904" and data["extended_code"] == "0x7"
    assert [s["name"] for s in data["stages"]] == ["name-resolution", "tcp"]
    assert data["stages"][-1]["ok"] is False
