"""security-layer-mismatch: the host offers only the RDP Security Layer, the client demands
server authentication.

SecurityLayer 0 makes the host use Standard RDP Security: no TLS, no NLA, so the server
cannot be authenticated. A client asked for TLS/CredSSP then gets
SSL_NOT_ALLOWED_BY_SERVER in the X.224 Connection Confirm ([MS-RDPBCGR] 2.2.1.2.2), and a
client whose policy says "Do not connect" when server authentication fails
(AuthenticationLevel=1, TS_SERVER_AUTH_REQUIRE) stops there (docs/sources.md s3, s4).

Open questions the lab answers one way (docs/sources.md s4, "Open questions"): [MS-RDPBCGR]
3.3.5.3.2 also lets such a host answer with an RDP_NEG_RSP selecting Standard RDP Security
instead of the failure code; whether mstsc at other AuthenticationLevels falls back to
Standard RDP Security is not documented (the lab says it does); and the host's own
UserAuthentication=1 is taken as not enforced under SecurityLayer 0. With no policy
setting AuthenticationLevel, the client's .rdp "authentication level" decides.
"""

from __future__ import annotations

from rdplab import windows as win
from rdplab.catalog.base import (
    DetectContext,
    Fault,
    Finding,
    Fix,
    Placement,
    Symptom,
    finding,
    op,
    reg_dword,
)

ID = "security-layer-mismatch"
SSL_NOT_ALLOWED_BY_SERVER = 0x2


def detect(ctx: DetectContext) -> list[Finding]:
    layer = ctx.host.effective("security_layer")
    auth = ctx.client.effective("server_auth_level")
    if layer.value != win.SECURITY_LAYER_RDP or auth.value != win.SERVER_AUTH_REQUIRE:
        return []
    return [
        finding(
            ID,
            "host",
            "host offers only the RDP Security Layer; client requires server authentication",
            host=layer.describe("SecurityLayer"),
            client=auth.describe("AuthenticationLevel"),
        )
    ]


NEGOTIATE = Fix(
    "restore-tls",
    "Remove the policy that forces the RDP Security Layer on the host (back to TLS + NLA).",
    {"host": (op("reg.delete", key=win.TS_POLICY_KEY, name="SecurityLayer"),)},
)
CONNECT_ANYWAY = Fix(
    "client-connect-anyway",
    "Set AuthenticationLevel=0 on the client: connect even when the server cannot be"
    " authenticated.",
    {"client": (reg_dword(win.TS_POLICY_KEY, "AuthenticationLevel", win.SERVER_AUTH_NONE),)},
    risk="lowers-security",
    leaves=("host:registry/*Terminal Services/SecurityLayer/*",),
)

FAULT = Fault(
    id=ID,
    title="Security layer mismatch (RDP Security Layer vs required server authentication)",
    symptom=Symptom(
        "x224",
        "The host answers the negotiation with SSL_NOT_ALLOWED_BY_SERVER; the client gives up.",
        negotiation_failure=SSL_NOT_ALLOWED_BY_SERVER,
    ),
    explanation=(
        "At the very start of a connection the client and host agree on a security layer "
        "(the X.224 negotiation). This host has been forced by policy to the old 'RDP "
        "Security Layer', which has no TLS and cannot prove the server's identity. The "
        "client is configured not to connect to a server it cannot authenticate, so the "
        "negotiation ends at once. (Microsoft's protocol specification also allows the host "
        "to answer by simply choosing the old layer; rdplab models the refusal, and which "
        "one Windows sends is an open question.) The safe fix removes the forcing policy on "
        "the host so it negotiates TLS and NLA again; loosening the client instead lowers "
        "security."
    ),
    placements=(
        Placement(
            "host",
            {
                "host": (reg_dword(win.TS_POLICY_KEY, "SecurityLayer", win.SECURITY_LAYER_RDP),),
                "client": (
                    reg_dword(win.TS_POLICY_KEY, "AuthenticationLevel", win.SERVER_AUTH_REQUIRE),
                ),
            },
            (NEGOTIATE, CONNECT_ANYWAY),
            leaves=("client:registry/*Terminal Services/AuthenticationLevel/*",),
        ),
    ),
    detect=detect,
    sources=(
        "[MS-RDPBCGR] 2.2.1.1.1, 2.2.1.2.2 (negotiation request and failure codes)",
        "Group Policy: Require use of specific security layer for remote (RDP) connections",
        "Group Policy: Configure server authentication for client (docs/sources.md s3)",
    ),
)
