"""Every fault's detector: silent on healthy machines, exactly one finding (right fault,
right role, with evidence) after the fault's own break ops, silent on near-misses."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from rdplab import catalog as cat
from rdplab import windows as win
from rdplab.catalog.base import DetectContext, Fault, Placement
from rdplab.errors import UnknownFaultError
from rdplab.facts import Facts
from rdplab.network import Network
from rdplab.ops import Op, render_op
from rdplab.twin import Twin
from rdplab.twin.certs import RD_STORE, make_self_signed

NET = Network()
#: the Windows faults: these tests break and gather two Windows twins (the network faults,
#: which need the router twin, are tested on the sim lab in test_network_faults.py)
PLACEMENTS = [
    pytest.param(fault, p, id=f"{fault.id}@{p.on}:{p.variant}")
    for fault in cat.catalog().values()
    if not fault.needs_router
    for p in fault.placements
]
FAULTS = [pytest.param(f, id=f.id) for f in cat.catalog().values()]


def dword(key: str, name: str, data: int) -> Op:
    return Op("reg.set", {"key": key, "name": name, "type": "REG_DWORD", "data": data})


def rule(**fields: Any) -> Op:
    return Op("fw.rule.add", {"rule": fields})


@pytest.fixture
def ctx_after(
    client: Twin,
    host: Twin,
    apply_ok: Callable[..., Any],
    contextualize: Callable[..., DetectContext],
) -> Callable[[list[Op], list[Op]], DetectContext]:
    def build(client_ops: list[Op], host_ops: list[Op]) -> DetectContext:
        if client_ops:
            apply_ok(client, client_ops)
        if host_ops:
            apply_ok(host, host_ops)
        return contextualize(client, host)

    return build


def test_catalog_has_all_modules() -> None:
    assert len(cat.catalog()) == len(cat.FAULT_MODULES) == 14


@pytest.mark.parametrize("fault", FAULTS)
def test_healthy_lab_has_no_findings(
    fault: Fault, ctx_after: Callable[[list[Op], list[Op]], DetectContext]
) -> None:
    assert fault.detect(ctx_after([], [])) == []


def test_healthy_lab_detect_all_is_empty(ctx_after: Callable[..., DetectContext]) -> None:
    assert cat.detect_all(ctx_after([], [])) == []


@pytest.mark.parametrize(("fault", "placement"), PLACEMENTS)
def test_break_ops_produce_exactly_their_finding(
    fault: Fault,
    placement: Placement,
    break_twins: Callable[..., tuple[Twin, Twin]],
    contextualize: Callable[..., DetectContext],
) -> None:
    client, host = break_twins(fault, placement)
    ctx = contextualize(client, host)
    (found,) = fault.detect(ctx)
    assert found.fault == fault.id
    assert found.role == placement.on
    assert found.summary
    assert found.evidence and any(v not in (None, "", [], {}) for v in found.evidence.values())
    # no other detector fires on a single planted fault
    assert [(f.fault, f.role) for f in cat.detect_all(ctx)] == [(fault.id, placement.on)]


@pytest.mark.parametrize(("fault", "placement"), PLACEMENTS)
def test_fix_ops_silence_the_detector(
    fault: Fault,
    placement: Placement,
    break_twins: Callable[..., tuple[Twin, Twin]],
    contextualize: Callable[..., DetectContext],
    apply_ok: Callable[..., Any],
) -> None:
    client, host = break_twins(fault, placement)
    for fix in placement.fixes:
        c, h = copy_twins(client, host)
        twins = {"client": c, "host": h}
        for role, ops in fix.ops.items():
            apply_ok(twins[role], [render_op(o, NET.context()) for o in ops])
        assert fault.detect(contextualize(c, h)) == [], fix.id


def copy_twins(client: Twin, host: Twin) -> tuple[Twin, Twin]:
    return copy.deepcopy(client), copy.deepcopy(host)


# -- near-misses and policy precedence ------------------------------------------------------
SINKHOLE_PKI = Op("hosts.set", {"name": NET.pki_name, "address": "0.0.0.0"})
HWID = win.MSLICENSING_KEY + r"\HardwareID"

# (case, fault id, client ops, host ops, fires?) on the healthy windows-11 / 2022 pair
CASES: list[tuple[str, str, list[Op], list[Op], bool]] = [
    # firewall-blocked
    (
        "udp-rule-disabled",
        "firewall-blocked",
        [],
        [Op("fw.rule.set", {"match": {"name": "RemoteDesktop-UserMode-In-UDP"}, "enabled": False})],
        False,
    ),
    (
        "shadow-rule-disabled",
        "firewall-blocked",
        [],
        [Op("fw.rule.set", {"match": {"name": "RemoteDesktop-Shadow-In-TCP"}, "enabled": False})],
        False,
    ),
    (
        "tcp-rule-disabled",
        "firewall-blocked",
        [],
        [Op("fw.rule.set", {"match": {"name": "RemoteDesktop-UserMode-In-TCP"}, "enabled": False})],
        True,
    ),
    (
        "udp-block-rule",
        "firewall-blocked",
        [],
        [rule(name="b", action="Block", protocol="UDP", local_port="3389")],
        False,
    ),
    (
        "block-on-public-only",
        "firewall-blocked",
        [],
        [rule(name="b", action="Block", local_port="3389", profiles=["Public"])],
        False,
    ),
    (
        "block-range-covering-3389",
        "firewall-blocked",
        [],
        [rule(name="b", action="Block", local_port="3000-4000")],
        True,
    ),
    (
        "block-for-other-program",
        "firewall-blocked",
        [],
        [rule(name="b", action="Block", program=r"C:\x.exe")],
        False,
    ),
    (
        "rd-group-disabled",
        "firewall-blocked",
        [],
        [Op("fw.rule.set", {"match": {"group": win.RD_GROUP}, "enabled": False})],
        True,
    ),
    (
        "client-outbound-block",
        "firewall-blocked",
        [rule(name="o", direction="Out", action="Block", remote_port="3389")],
        [],
        False,
    ),
    # firewall-websocket-blocked
    (
        "ws-wss-only-disabled",
        "firewall-websocket-blocked",
        [],
        [Op("fw.rule.set", {"match": {"name": "RemoteDesktop-In-TCP-WSS"}, "enabled": False})],
        True,
    ),
    (
        "client-out-block-3389-only",
        "firewall-websocket-blocked",
        [rule(name="o", direction="Out", action="Block", remote_port="3389")],
        [],
        False,
    ),
    (
        "client-inbound-ws-disabled",
        "firewall-websocket-blocked",
        [Op("fw.rule.set", {"match": {"group": win.RD_WS_GROUP}, "enabled": False})],
        [],
        False,
    ),
    (
        "host-3389-group-off",
        "firewall-websocket-blocked",
        [],
        [Op("fw.rule.set", {"match": {"group": win.RD_GROUP}, "enabled": False})],
        False,
    ),
    # dns-stale-record
    (
        "hosts-points-right",
        "dns-stale-record",
        [Op("hosts.set", {"name": NET.host_name, "address": NET.host_address})],
        [],
        False,
    ),
    (
        "cache-points-right",
        "dns-stale-record",
        [Op("dns.cache.seed", {"name": NET.host_name.upper(), "address": NET.host_address})],
        [],
        False,
    ),
    (
        "other-name-stale",
        "dns-stale-record",
        [Op("hosts.set", {"name": "old.rdplab.test", "address": NET.stale_address})],
        [],
        False,
    ),
    (
        "hosts-upper-case-name-stale",
        "dns-stale-record",
        [Op("hosts.set", {"name": NET.host_name.upper(), "address": NET.stale_address})],
        [],
        True,
    ),
    # security-layer-mismatch
    (
        "client-auth-level-2-warn",
        "security-layer-mismatch",
        [dword(win.TS_POLICY_KEY, "AuthenticationLevel", 2)],
        [dword(win.TS_POLICY_KEY, "SecurityLayer", 0)],
        False,
    ),
    (
        "client-auth-level-absent",
        "security-layer-mismatch",
        [],
        [dword(win.TS_POLICY_KEY, "SecurityLayer", 0)],
        False,
    ),
    (
        "host-negotiate",
        "security-layer-mismatch",
        [dword(win.TS_POLICY_KEY, "AuthenticationLevel", 1)],
        [dword(win.TS_POLICY_KEY, "SecurityLayer", 1)],
        False,
    ),
    (
        "host-pref-rdp-layer",
        "security-layer-mismatch",
        [dword(win.TS_POLICY_KEY, "AuthenticationLevel", 1)],
        [dword(win.RDP_TCP_KEY, "SecurityLayer", 0)],
        True,
    ),
    (
        "policy-tls-beats-pref-rdp",
        "security-layer-mismatch",
        [dword(win.TS_POLICY_KEY, "AuthenticationLevel", 1)],
        [dword(win.RDP_TCP_KEY, "SecurityLayer", 0), dword(win.TS_POLICY_KEY, "SecurityLayer", 2)],
        False,
    ),
    # cert-revocation-unreachable
    ("sinkhole-but-self-signed", "cert-revocation-unreachable", [SINKHOLE_PKI], [], False),
    # rdp-disabled
    (
        "policy-deny-beats-pref-allow",
        "rdp-disabled",
        [],
        [
            dword(win.TS_POLICY_KEY, "fDenyTSConnections", 1),
            dword(win.TS_KEY, "fDenyTSConnections", 0),
        ],
        True,
    ),
    (
        "policy-allow-beats-pref-deny",
        "rdp-disabled",
        [],
        [
            dword(win.TS_POLICY_KEY, "fDenyTSConnections", 0),
            dword(win.TS_KEY, "fDenyTSConnections", 1),
        ],
        False,
    ),
    (
        "value-absent-means-denied",
        "rdp-disabled",
        [],
        [Op("reg.delete", {"key": win.TS_KEY, "name": "fDenyTSConnections"})],
        True,
    ),
    ("client-denies", "rdp-disabled", [dword(win.TS_KEY, "fDenyTSConnections", 1)], [], False),
    # listener-port-changed
    (
        "port-value-absent",
        "listener-port-changed",
        [],
        [Op("reg.delete", {"key": win.RDP_TCP_KEY, "name": "PortNumber"})],
        False,
    ),
    (
        "port-moved-no-restart",
        "listener-port-changed",
        [],
        [dword(win.RDP_TCP_KEY, "PortNumber", 3390)],
        True,
    ),
    # termservice-stopped
    (
        "running-but-disabled",
        "termservice-stopped",
        [],
        [Op("svc.config", {"name": "TermService", "start_type": "Disabled"})],
        True,
    ),
    ("stopped-manual", "termservice-stopped", [], [Op("svc.stop", {"name": "TermService"})], True),
    (
        "automatic-running",
        "termservice-stopped",
        [],
        [Op("svc.config", {"name": "TermService", "start_type": "Automatic"})],
        False,
    ),
    (
        "client-termservice-stopped",
        "termservice-stopped",
        [Op("svc.stop", {"name": "TermService"})],
        [],
        False,
    ),
    # rdp-cert-corrupt
    (
        "store-emptied",
        "rdp-cert-corrupt",
        [],
        [Op("cert.remove", {"store": RD_STORE, "which": "all"})],
        True,
    ),
    (
        "client-cert-corrupt",
        "rdp-cert-corrupt",
        [Op("machinekeys.corrupt", {"store": RD_STORE})],
        [],
        False,
    ),
    # licensing-cache-stale
    (
        "mslicensing-absent",
        "licensing-cache-stale",
        [Op("reg.delete", {"key": win.MSLICENSING_KEY})],
        [],
        False,
    ),
    (
        "hwid-19-bytes",
        "licensing-cache-stale",
        [
            Op(
                "reg.set",
                {"key": HWID, "name": "ClientHWID", "type": "REG_BINARY", "data": "00" * 19},
            )
        ],
        [],
        True,
    ),
    (
        "hwid-reg-sz",
        "licensing-cache-stale",
        [Op("reg.set", {"key": HWID, "name": "ClientHWID", "type": "REG_SZ", "data": "00" * 20})],
        [],
        True,
    ),
    (
        "store-missing-only",
        "licensing-cache-stale",
        [Op("reg.delete", {"key": win.MSLICENSING_KEY + r"\Store"})],
        [],
        True,
    ),
    (
        "hwid-value-case",
        "licensing-cache-stale",
        [
            Op("reg.delete", {"key": HWID, "name": "ClientHWID"}),
            Op(
                "reg.set",
                {
                    "key": HWID.upper(),
                    "name": "CLIENTHWID",
                    "type": "REG_BINARY",
                    "data": "11" * 20,
                },
            ),
        ],
        [],
        False,
    ),
    (
        "host-mslicensing-corrupt",
        "licensing-cache-stale",
        [],
        [Op("reg.set", {"key": HWID, "name": "ClientHWID", "type": "REG_BINARY", "data": "00"})],
        False,
    ),
]


@pytest.mark.parametrize(
    ("fault_id", "client_ops", "host_ops", "fires"),
    [pytest.param(*c[1:], id=f"{c[1]}:{c[0]}") for c in CASES],
)
def test_near_misses_and_precedence(
    fault_id: str,
    client_ops: list[Op],
    host_ops: list[Op],
    fires: bool,
    ctx_after: Callable[[list[Op], list[Op]], DetectContext],
) -> None:
    found = cat.get(fault_id).detect(ctx_after(client_ops, host_ops))
    if not fires:
        assert found == []
        return
    (f,) = found
    assert f.fault == fault_id and f.evidence


# The same on the host after cert-revocation-unreachable's host break (the lab CA's
# certificate imported into My and bound to RDP-Tcp).
UNBIND = Op("reg.delete", {"key": win.RDP_TCP_KEY, "name": "SSLCertificateSHA1Hash"})
BOUND_CASES: list[tuple[str, str, list[Op], list[Op], bool]] = [
    ("crl-sinkholed", "cert-revocation-unreachable", [SINKHOLE_PKI], [], True),
    (
        "revocation-check-off",
        "cert-revocation-unreachable",
        [dword(win.TS_CLIENT_POLICY_KEY, "AllowCertRevocationCheck", 0), SINKHOLE_PKI],
        [],
        False,
    ),
    (
        "revocation-check-on-explicitly",
        "cert-revocation-unreachable",
        [dword(win.TS_CLIENT_POLICY_KEY, "AllowCertRevocationCheck", 1), SINKHOLE_PKI],
        [],
        True,
    ),
    (
        "revocation-check-off-in-wrong-key",  # only the ...\Terminal Services\Client value counts
        "cert-revocation-unreachable",
        [dword(win.TS_POLICY_KEY, "AllowCertRevocationCheck", 0), SINKHOLE_PKI],
        [],
        True,
    ),
    ("crl-reachable", "cert-revocation-unreachable", [], [], False),
    ("ca-cert-imported-not-bound", "cert-revocation-unreachable", [SINKHOLE_PKI], [UNBIND], False),
    ("bound-cert-healthy", "rdp-cert-corrupt", [], [], False),
    # a corrupt key on the self-signed certificate the host does not use right now is
    # still broken state the detector can see (TermService falls back to it): a finding
    (
        "bound-healthy-but-rd-corrupt",
        "rdp-cert-corrupt",
        [],
        [Op("machinekeys.corrupt", {"store": RD_STORE})],
        True,
    ),
    (
        "bound-corrupt-rd-healthy",
        "rdp-cert-corrupt",
        [],
        [Op("machinekeys.corrupt", {"store": "My"})],
        True,
    ),
    (
        "bound-cert-removed",
        "rdp-cert-corrupt",
        [],
        [Op("cert.remove", {"store": "My", "which": "all"})],
        True,
    ),
]


@pytest.mark.parametrize(
    ("fault_id", "client_ops", "host_ops", "fires"),
    [pytest.param(*c[1:], id=f"{c[1]}:{c[0]}") for c in BOUND_CASES],
)
def test_near_misses_with_a_bound_ca_certificate(
    fault_id: str,
    client_ops: list[Op],
    host_ops: list[Op],
    fires: bool,
    client: Twin,
    bound_host: Twin,
    apply_ok: Callable[..., Any],
    contextualize: Callable[..., DetectContext],
) -> None:
    for twin, ops in ((client, client_ops), (bound_host, host_ops)):
        if ops:
            apply_ok(twin, ops)
    found = cat.get(fault_id).detect(contextualize(client, bound_host))
    assert [(f.fault, bool(f.evidence)) for f in found] == ([(fault_id, True)] if fires else [])


def test_cert_corrupt_silent_while_one_rd_cert_is_usable(
    host: Twin, ctx_after: Callable[..., DetectContext]
) -> None:
    host.certs.add(RD_STORE, make_self_signed("HOST"))
    first = host.certs.entries(RD_STORE)[0]
    host.certs.machinekeys[first.key_file] = "corrupt"
    assert cat.get("rdp-cert-corrupt").detect(ctx_after([], [])) == []
    host.certs.machinekeys[host.certs.entries(RD_STORE)[1].key_file] = "corrupt"
    (f,) = cat.get("rdp-cert-corrupt").detect(ctx_after([], []))
    assert [c["key"] for c in f.evidence["certificates"]] == ["corrupt", "corrupt"]


def test_firewall_blocked_evidence_names_rules(ctx_after: Callable[..., DetectContext]) -> None:
    ctx = ctx_after([], [rule(name="rdplab-b", action="Block", local_port="3389")])
    (f,) = cat.get("firewall-blocked").detect(ctx)
    assert f.evidence["block_rules"] == ["rdplab-b"]
    assert f.evidence["disabled_rd_rules"] == []
    assert "Private" in f.summary


def test_firewall_blocked_not_when_active_profile_is_off(
    host: Twin, ctx_after: Callable[..., DetectContext]
) -> None:
    host.firewall.profiles["Private"].enabled = False
    ctx = ctx_after([], [Op("fw.rule.set", {"match": {"group": win.RD_GROUP}, "enabled": False})])
    assert cat.get("firewall-blocked").detect(ctx) == []


def test_firewall_blocked_follows_the_lab_port(
    client: Twin,
    host: Twin,
    apply_ok: Callable[..., Any],
    contextualize: Callable[..., DetectContext],
) -> None:
    # a lab on port 3390 whose host listens there: the 3389 rules do not open it
    apply_ok(host, [dword(win.RDP_TCP_KEY, "PortNumber", 3390)])
    alt = Network(port=3390)
    (f,) = cat.get("firewall-blocked").detect(contextualize(client, host, alt))
    assert "3390" in f.summary and "default is Block" in f.evidence["verdict"]
    apply_ok(host, [rule(name="alt", local_port="3390", program=win.TS_PROGRAM)])
    assert cat.get("firewall-blocked").detect(contextualize(client, host, alt)) == []
    # ... and a block on 3389 no longer matters to it
    apply_ok(host, [rule(name="b", action="Block", local_port="3389")])
    assert cat.get("firewall-blocked").detect(contextualize(client, host, alt)) == []
    assert cat.get("firewall-blocked").detect(contextualize(client, host)) != []


def test_rdp_disabled_evidence_names_the_source(ctx_after: Callable[..., DetectContext]) -> None:
    ctx = ctx_after([], [dword(win.TS_POLICY_KEY, "fDenyTSConnections", 1)])
    (f,) = cat.get("rdp-disabled").detect(ctx)
    assert f.evidence == {"setting": "fDenyTSConnections=1 (policy)"}


def test_dns_stale_reports_hosts_before_cache(ctx_after: Callable[..., DetectContext]) -> None:
    ctx = ctx_after(
        [
            Op("dns.cache.seed", {"name": NET.host_name, "address": "192.168.56.98"}),
            Op("hosts.set", {"name": NET.host_name, "address": NET.stale_address}),
            Op("dns.cache.seed", {"name": NET.host_name, "address": "192.168.56.98"}),
        ],
        [],
    )
    (f,) = cat.get("dns-stale-record").detect(ctx)
    assert f.evidence["source"] == "hosts file"
    assert f.evidence["resolved"] == NET.stale_address
    assert f.evidence["expected"] == NET.host_address


def test_termservice_summary_distinguishes_stopped_and_disabled(
    ctx_after: Callable[..., DetectContext],
) -> None:
    (f,) = cat.get("termservice-stopped").detect(
        ctx_after([], [Op("svc.config", {"name": "TermService", "start_type": "Disabled"})])
    )
    assert f.summary == "TermService is disabled"
    assert f.evidence["service"] == {"status": "Running", "start_type": "Disabled"}


def test_cert_revocation_evidence(
    client: Twin,
    bound_host: Twin,
    apply_ok: Callable[..., Any],
    contextualize: Callable[..., DetectContext],
) -> None:
    apply_ok(client, [SINKHOLE_PKI])
    (f,) = cat.get("cert-revocation-unreachable").detect(contextualize(client, bound_host))
    assert f.evidence["certificate"] == NET.issued.thumbprint
    assert list(f.evidence["unreachable"]) == [NET.crl_url]
    assert "0.0.0.0" in f.evidence["unreachable"][NET.crl_url]
    assert f.evidence["revocation_check"] == "AllowCertRevocationCheck=1 (default)"


def test_cert_revocation_unprobed_url_counts_as_unreachable(client: Twin, bound_host: Twin) -> None:
    ctx = DetectContext(
        Facts.parse("client", client.gather()), Facts.parse("host", bound_host.gather()), NET
    )
    (f,) = cat.get("cert-revocation-unreachable").detect(ctx)
    assert f.evidence["unreachable"] == {NET.crl_url: "not probed"}


def test_unknown_fault_id_lists_known() -> None:
    with pytest.raises(UnknownFaultError, match="firewall-blocked"):
        cat.get("firewall-blockd")


# -- revocation: every CRL location is an alternative; LDAP is never "unreachable" (issue 7 10) ----
LDAP_CDP = "ldap:///CN=rdplab%20Lab%20CA,CN=PKI,CN=CDP,CN=Public%20Key%20Services,DC=rdplab,DC=test"
HTTP_A = "http://pki.rdplab.test/a.crl"
HTTP_B = "http://pki2.rdplab.test/b.crl"
ANSWERS = {"reachable": True, "detail": "answered"}
SILENT = {"reachable": False, "detail": "no answer"}


@pytest.mark.parametrize(
    ("cdp", "probes", "fires"),
    [
        pytest.param([LDAP_CDP], {}, False, id="ldap-only-cannot-be-judged"),
        pytest.param([LDAP_CDP, HTTP_A], {HTTP_A: SILENT}, True, id="ldap-and-http-down"),
        pytest.param([LDAP_CDP, HTTP_A], {HTTP_A: ANSWERS}, False, id="ldap-and-http-up"),
        pytest.param([HTTP_A, HTTP_B], {HTTP_A: SILENT, HTTP_B: ANSWERS}, False, id="one-of-two"),
        pytest.param([HTTP_A, HTTP_B], {HTTP_A: SILENT, HTTP_B: SILENT}, True, id="none-of-two"),
    ],
)
def test_revocation_needs_every_http_location_down(
    cdp: list[str],
    probes: dict[str, dict[str, object]],
    fires: bool,
    client: Twin,
    bound_host: Twin,
    contextualize: Callable[..., DetectContext],
) -> None:
    from rdplab.catalog import cert_revocation_unreachable as revocation

    ctx = contextualize(client, bound_host)
    cert = revocation.presented_certificate(ctx)
    assert cert is not None
    cert["cdp"] = cdp
    ctx.client.raw["probes"] = probes
    found = revocation.detect(ctx)
    assert bool(found) is fires
    if found:
        (f,) = found
        assert set(f.evidence["unreachable"]) == {u for u in cdp if u.startswith("http")}
        assert f.evidence["not_probed"] == [u for u in cdp if u.startswith("ldap")]
    assert revocation.probe_urls({"certificates": {"My": [{"cdp": cdp}]}}) == sorted(
        u for u in cdp if u.startswith("http")
    )


def test_twin_reports_an_ldap_location_as_not_probed(client: Twin) -> None:
    assert client.probe_url(LDAP_CDP) == {"reachable": False, "detail": "not probed: ldap scheme"}


def test_firewall_blocked_by_group_policy_says_change_the_gpo(
    host: Twin, client: Twin, contextualize: Callable[..., DetectContext]
) -> None:
    """issue 7 item 9: the facts carry each rule's store; a Group Policy block rule is named
    and the advice is to change the GPO (the fix's ops change the local store only)."""
    from rdplab.catalog import firewall_blocked
    from rdplab.twin.firewall import Rule

    host.firewall.rules.append(
        Rule.from_json(
            {"name": "{GPO-RDP-BLOCK}", "action": "Block", "local_port": "3389", "store": "gpo"}
        )
    )
    (f,) = firewall_blocked.detect(contextualize(client, host))
    assert f.summary.endswith("blocked by Group Policy: change the GPO, not the machine")
    assert f.evidence["group_policy_rules"] == ["{GPO-RDP-BLOCK}"]
    # a local block rule alone: no Group Policy advice
    host.firewall.rules[-1].store = "local"
    (f,) = firewall_blocked.detect(contextualize(client, host))
    assert "Group Policy" not in f.summary and "group_policy_rules" not in f.evidence


@pytest.mark.parametrize(
    ("scope", "found"),
    [(["LocalSubnet"], False), (["192.168.56.10"], False), (["10.0.0.0/8"], True)],
)
def test_firewall_rule_scoped_away_from_the_client_is_found(
    make_twin: Callable[..., Twin],
    contextualize: Callable[..., DetectContext],
    scope: list[str],
    found: bool,
) -> None:
    """The detector judges the host's rules from the lab client's address, as Windows
    applies a rule's RemoteAddress scope: a Remote Desktop rule scoped to a subnet the
    client is not on blocks it as surely as a disabled rule."""
    client, host = make_twin("windows-11", "CLIENT"), make_twin("windows-server-2022", "HOST")
    rule = {
        "name": "RemoteDesktop-UserMode-In-TCP",
        "display_name": "Remote Desktop - User Mode (TCP-In)",
        "group": "Remote Desktop",
        "local_port": "3389",
        "program": "%SystemRoot%\\system32\\svchost.exe",
        "remote_address": scope,
    }
    result = host.apply([Op("fw.rule.add", {"rule": rule})])
    assert not result.errors, [r.to_json() for r in result.errors]
    findings = cat.get("firewall-blocked").detect(contextualize(client, host))
    assert bool(findings) is found, findings
