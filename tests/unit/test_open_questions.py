"""Questions Microsoft's documentation leaves open, and the answer the twin picks for each.

Each test names the choice and its source; docs/sources.md s4 ("Open questions") lists
them. A real Windows lab (vagrant/inventory provider) is what would settle them; none has
run here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rdplab import windows as win
from rdplab.connection import PROTOCOL_RDP, SSL_NOT_ALLOWED_BY_SERVER, connect
from rdplab.network import Network
from rdplab.ops import Op
from rdplab.twin import Twin


def dword(key: str, name: str, data: int) -> Op:
    return Op("reg.set", {"key": key, "name": name, "type": "REG_DWORD", "data": data})


def _stages(result: Any) -> list[str]:
    return [s.name for s in result.stages]


def test_choice_security_layer_0_answers_tls_request_with_ssl_not_allowed_by_server(
    client: Twin, host: Twin, net: Network, apply_ok: Callable[..., Any]
) -> None:
    """OPEN: [MS-RDPBCGR] 3.3.5.3.2 lets a server configured for Standard RDP Security
    answer a PROTOCOL_SSL|PROTOCOL_HYBRID request either with RDP_NEG_FAILURE
    SSL_NOT_ALLOWED_BY_SERVER or with an RDP_NEG_RSP selecting PROTOCOL_RDP.
    CHOICE: the failure code 0x2, as 2.2.1.2.2 defines it ("configured to only use
    Standard RDP Security") and as FreeRDP logs against such servers show (sources.md
    s4). A client that will not connect unauthenticated stops there."""
    apply_ok(host, [dword(win.TS_POLICY_KEY, "SecurityLayer", 0)])
    apply_ok(client, [dword(win.TS_POLICY_KEY, "AuthenticationLevel", 1)])
    result = connect(client, host, net)
    assert result.failed_stage == "x224"
    assert result.negotiation_failure == SSL_NOT_ALLOWED_BY_SERVER == 0x2
    assert "RDP_NEG_FAILURE" in result.evidence


@pytest.mark.parametrize(
    ("level", "described"),
    [
        (0, "AuthenticationLevel=0 (policy)"),
        (2, "AuthenticationLevel=2 (policy)"),
        (None, "AuthenticationLevel=3 (rdp-file default)"),
    ],
)
def test_choice_mstsc_falls_back_to_standard_rdp_security_unless_do_not_connect(
    client: Twin,
    host: Twin,
    net: Network,
    apply_ok: Callable[..., Any],
    level: int | None,
    described: str,
) -> None:
    """OPEN: no Microsoft page says whether mstsc, refused TLS, reconnects with Standard RDP
    Security. CHOICE: it does unless AuthenticationLevel is 1 ("Do not connect"), since 0
    (always connect), 2 (warn, the user may continue) and 3 (no requirement) all accept a
    server that cannot be authenticated (TS_SERVER_AUTH explanation; .rdp "authentication
    level"; sources.md s3). Level 2's warning dialog is not modelled."""
    apply_ok(host, [dword(win.TS_POLICY_KEY, "SecurityLayer", 0)])
    if level is not None:
        apply_ok(client, [dword(win.TS_POLICY_KEY, "AuthenticationLevel", level)])
    result = connect(client, host, net)
    assert result.ok, result.to_json()
    assert _stages(result) == ["name-resolution", "tcp", "x224", "licensing"]
    x224 = result.stages[2].detail
    assert "Standard RDP Security" in x224 and described in x224
    assert result.notes == ["server identity not verified (Standard RDP Security)"]
    assert PROTOCOL_RDP == 0


@pytest.mark.parametrize(
    ("nla_key", "described"),
    [
        (win.RDP_TCP_KEY, "UserAuthentication=1 (preference) not enforced"),
        (win.TS_POLICY_KEY, "UserAuthentication=1 (policy) not enforced"),
    ],
)
def test_choice_security_layer_0_wins_over_user_authentication_1(
    client: Twin,
    host: Twin,
    net: Network,
    apply_ok: Callable[..., Any],
    nla_key: str,
    described: str,
) -> None:
    """OPEN: no Microsoft page says what a host does with a policy SecurityLayer=0 and
    UserAuthentication=1 (the baselines' local NLA setting, or an NLA policy). A server
    could as well refuse with HYBRID_REQUIRED_BY_SERVER. CHOICE: the layer wins and NLA is
    not enforced, because NLA is CredSSP run inside TLS ([MS-RDPBCGR] 5.4.5.2; [MS-CSSP]
    3.1.5) and Standard RDP Security has no TLS. The stage says which NLA setting went
    unenforced, and no CredSSP stage runs."""
    apply_ok(host, [dword(nla_key, "UserAuthentication", 1)])
    apply_ok(host, [dword(win.TS_POLICY_KEY, "SecurityLayer", 0)])
    result = connect(client, host, net)
    assert result.ok, result.to_json()
    assert "credssp" not in _stages(result) and "tls" not in _stages(result)
    assert described in result.stages[2].detail


def test_without_standard_rdp_security_nla_is_not_mentioned(
    client: Twin, host: Twin, net: Network
) -> None:
    """The note about unenforced NLA appears only where the twin made that choice."""
    result = connect(client, host, net)
    assert result.ok and "not enforced" not in result.stages[2].detail
    assert "credssp" in _stages(result)


def test_the_catalog_tells_trainees_which_answer_is_open() -> None:
    from rdplab.catalog import security_layer_mismatch as slm

    assert "open question" in slm.FAULT.explanation
    assert "3.3.5.3.2" in (slm.__doc__ or "") and "Open questions" in (slm.__doc__ or "")
