"""Policy precedence: a value under HKLM\\SOFTWARE\\Policies beats its preference twin.

Group Policy writes its settings under the Policies keys; when a policy value is present
Windows uses it and ignores the setting of the same name under the service's own key
(docs/sources.md, section 11).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rdplab import windows as win

Lookup = Callable[[str, str], Any]  # (key, value name) -> data or None


@dataclass(frozen=True)
class Effective:
    value: Any
    source: str  # policy | preference | default | rdp-file default

    def describe(self, name: str) -> str:
        return f"{name}={self.value} ({self.source})"


def effective(
    lookup: Lookup, name: str, policy_key: str, pref_key: str | None, default: Any
) -> Effective:
    pol = lookup(policy_key, name)
    if pol is not None:
        return Effective(pol, "policy")
    if pref_key is not None:
        pref = lookup(pref_key, name)
        if pref is not None:
            return Effective(pref, "preference")
    return Effective(default, "default")


def deny_ts_connections(lookup: Lookup) -> Effective:
    return effective(lookup, "fDenyTSConnections", win.TS_POLICY_KEY, win.TS_KEY, 1)


def security_layer(lookup: Lookup) -> Effective:
    # OPEN QUESTION (sources.md s4): no Microsoft page gives the value a current build ships
    # under RDP-Tcp; the baselines set 2 explicitly. When the value is absent rdplab takes
    # 1 (Negotiate), the only documented default (unattend reference "SecurityLayer").
    # Negotiate and SSL behave alike for mstsc's TLS/CredSSP request, so the connection
    # model does not depend on the choice.
    return effective(
        lookup, "SecurityLayer", win.TS_POLICY_KEY, win.RDP_TCP_KEY, win.SECURITY_LAYER_NEGOTIATE
    )


def user_authentication(lookup: Lookup) -> Effective:
    return effective(lookup, "UserAuthentication", win.TS_POLICY_KEY, win.RDP_TCP_KEY, 1)


def min_encryption_level(lookup: Lookup) -> Effective:
    # "Set client connection encryption level" writes MinEncryptionLevel under the policy
    # key; RDP-Tcp holds the local one. 2 (Client Compatible) when neither is set
    # (reference table; Win32_TSGeneralSetting SetEncryptionLevel for the values).
    return effective(lookup, "MinEncryptionLevel", win.TS_POLICY_KEY, win.RDP_TCP_KEY, 2)


def listener_port(lookup: Lookup) -> int:
    port = lookup(win.RDP_TCP_KEY, "PortNumber")
    return int(port) if port is not None else win.DEFAULT_RDP_PORT


def encryption_oracle(lookup: Lookup) -> Effective:
    # Not configured behaves as Mitigated on an updated machine (KB 4093492).
    return effective(lookup, "AllowEncryptionOracle", win.CREDSSP_KEY, None, win.ORACLE_MITIGATED)


def revocation_check(lookup: Lookup) -> Effective:
    # Absent means the client checks revocation (seed article; sources.md s2).
    return effective(lookup, "AllowCertRevocationCheck", win.TS_CLIENT_POLICY_KEY, None, 1)


def server_auth_level(lookup: Lookup) -> Effective:
    """The client's AuthenticationLevel: 0 always connect, 1 do not connect when the server
    cannot be authenticated, 2 warn, 3 no requirement specified (sources.md s3).

    The policy "Configure server authentication for client" (TS_SERVER_AUTH) wins when
    set. When it is not configured, its explanation says the setting in Remote Desktop
    Connection or the .rdp file decides. rdplab does not read those, so it takes the
    .rdp property's documented default, 3, and names that source."""
    pol = lookup(win.TS_POLICY_KEY, "AuthenticationLevel")
    if pol is not None:
        return Effective(pol, "policy")
    return Effective(win.RDP_FILE_AUTHENTICATION_LEVEL_DEFAULT, "rdp-file default")
