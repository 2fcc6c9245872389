"""The security judge: does the state after a fix weaken a security-relevant setting?

It reads state, not labels. Each machine's snapshot after the fix (the ``diff`` step's) is
compared with its healthy baseline snapshot (the ``baseline`` step's), setting by setting,
through ``SETTINGS``: a table of what protects a Remote Desktop connection, each with its
values in order from weakest to strongest and the source that says what they mean
(docs/sources.md s13 collects them). A setting whose value after the fix sits lower in that
order than at the baseline is a weakening; so is a Remote Desktop port that the host's
firewall lets in on more profiles than at the baseline, or from remote addresses the
baseline's rules did not admit (a rule's RemoteAddress scope widened, e.g. LocalSubnet to
Any, or a new allow rule with a wider scope).

Policy values beat their preference twins here as everywhere (``rdplab.policy``): the
judge compares effective values, so a fix that only sets the local value under a policy
that still wins changes nothing in the verdict.

Snapshots have the same shape on every provider (``Twin.snapshot`` on sim, the facts
document reshaped by ``snapshot_from_facts`` on real machines), so the verdict does too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rdplab import policy
from rdplab import windows as win
from rdplab.catalog.base import ROLES, Role
from rdplab.twin.firewall import PROFILES, Firewall, address_covers

Snapshot = Mapping[str, Any]


@dataclass(frozen=True)
class Setting:
    """One security-relevant setting on one machine.

    ``order``: its known values from weakest to strongest (the safe direction is towards
    the end). ``meaning``: what each value means, for the report."""

    name: str
    role: Role
    read: Callable[[policy.Lookup], policy.Effective]
    order: tuple[int, ...]
    meaning: Mapping[int, str]
    source: str

    @property
    def id(self) -> str:
        return f"{self.role}:{self.name}"

    def rank(self, value: Any) -> int | None:
        try:
            return self.order.index(int(value))
        except (TypeError, ValueError):
            return None

    def describe(self, value: Any) -> str:
        try:
            return f"{value} ({self.meaning[int(value)]})"
        except (KeyError, TypeError, ValueError):
            return f"{value!r} (not a documented value)"


_SECURITY_LAYER = {0: "RDP Security Layer", 1: "Negotiate", 2: "SSL/TLS"}
_ORACLE = {0: "Force Updated Clients", 1: "Mitigated", 2: "Vulnerable"}
_SOURCES = {
    "nla": "TerminalServer.admx TS_USER_AUTHENTICATION_POLICY (UserAuthentication, 1 = NLA"
    " required); docs/sources.md s4",
    "layer": "Microsoft Learn: Win32_TSGeneralSetting SetSecurityLayer (0 RDP, 1 Negotiate,"
    " 2 SSL/TLS); TerminalServer.admx TS_SECURITY_LAYER_POLICY; docs/sources.md s4",
    "encryption": "Microsoft Learn: Win32_TSGeneralSetting SetEncryptionLevel (1 low,"
    " 2 client compatible, 3 high, 4 FIPS); docs/sources.md s13",
    "oracle": "Microsoft support KB 4093492: AllowEncryptionOracle (0 Force Updated"
    " Clients, 1 Mitigated, 2 Vulnerable); docs/sources.md s1",
    "revocation": "Seed article: AllowCertRevocationCheck=0 turns the client's revocation"
    " check off (undocumented by Microsoft); docs/sources.md s2",
    "server_auth": "Microsoft Learn: IMsRdpClientAdvancedSettings4::AuthenticationLevel"
    " (0 always connect, 2 warn, 1 do not connect) and the .rdp property (3 no requirement"
    " specified, its default); TerminalServer.admx TS_SERVER_AUTH;"
    " docs/sources.md s3",
    "firewall": "Microsoft Learn: Windows Firewall rules (a rule applies to the profiles it"
    " lists; a profile with its firewall off lets everything in); docs/sources.md s9",
    "remote_address": "Microsoft Learn: New-NetFirewallRule -RemoteAddress and"
    " Get-NetFirewallAddressFilter (a rule admits only peers in its remote addresses: Any,"
    " or addresses, subnets, ranges and keywords such as LocalSubnet); docs/sources.md s9",
}


#: The table. A new setting is one row. Orders are weakest first.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "UserAuthentication",
        "host",
        policy.user_authentication,
        (0, 1),
        {0: "NLA not required", 1: "NLA required"},
        _SOURCES["nla"],
    ),
    Setting(
        "SecurityLayer",
        "host",
        policy.security_layer,
        (0, 1, 2),
        _SECURITY_LAYER,
        _SOURCES["layer"],
    ),
    Setting(
        "MinEncryptionLevel",
        "host",
        policy.min_encryption_level,
        (1, 2, 3, 4),
        {1: "Low", 2: "Client Compatible", 3: "High", 4: "FIPS Compliant"},
        _SOURCES["encryption"],
    ),
    *(
        Setting(
            "AllowEncryptionOracle",
            role,
            policy.encryption_oracle,
            (2, 1, 0),
            _ORACLE,
            _SOURCES["oracle"],
        )
        for role in ROLES
    ),
    Setting(
        "AllowCertRevocationCheck",
        "client",
        policy.revocation_check,
        (0, 1),
        {0: "revocation check off", 1: "revocation checked"},
        _SOURCES["revocation"],
    ),
    Setting(
        "AuthenticationLevel",
        "client",
        policy.server_auth_level,
        (0, 3, 2, 1),
        {0: "always connect", 1: "do not connect", 2: "warn", 3: "no requirement specified"},
        _SOURCES["server_auth"],
    ),
)

#: Remote Desktop's inbound ports on the host, with the program that owns each listener.
RD_PORTS: tuple[tuple[int, str], ...] = (
    (win.DEFAULT_RDP_PORT, win.TS_PROGRAM),
    *((p, win.WS_PROGRAM) for p in win.WEBSOCKET_PORTS),
)


@dataclass(frozen=True)
class Weakening:
    """One setting a fix left weaker than the baseline."""

    role: Role
    setting: str
    before: str
    after: str
    source: str

    def __str__(self) -> str:
        return f"{self.role}: {self.setting} {self.before} -> {self.after} (source: {self.source})"

    def to_json(self) -> dict[str, str]:
        return {
            "role": self.role,
            "setting": self.setting,
            "before": self.before,
            "after": self.after,
            "source": self.source,
        }


def lookup(snapshot: Snapshot) -> policy.Lookup:
    """(key, value name) -> data, case-insensitive, from a snapshot's registry."""
    reg = {k.lower(): v for k, v in (snapshot.get("registry") or {}).items()}

    def get(key: str, name: str) -> Any:
        values = reg.get(key.lower()) or {}
        for vname, v in values.items():
            if vname.lower() == name.lower():
                return v.get("data") if isinstance(v, dict) else v
        return None

    return get


def _rd_firewalls(snapshot: Snapshot) -> tuple[list[tuple[int, str]], dict[str, Firewall]]:
    """The Remote Desktop ports (with their programs) and the host's firewall with each
    profile active."""
    fw = snapshot.get("firewall") or {}
    rules = fw.get("rules") or []
    data = {
        "profiles": fw.get("profiles") or {},
        "rules": list(rules.values()) if isinstance(rules, dict) else list(rules),
    }
    ports = [*RD_PORTS]
    listener = policy.listener_port(lookup(snapshot))
    if listener != win.DEFAULT_RDP_PORT:
        ports.append((listener, win.TS_PROGRAM))
    parsed = Firewall.from_json(data)  # parsed once; each profile shares its (read-only) rules
    return ports, {p: Firewall(parsed.profiles, parsed.rules, p) for p in PROFILES}


def rd_exposure(snapshot: Snapshot) -> dict[int, set[str]]:
    """Remote Desktop port -> the firewall profiles on which inbound TCP to it is let in."""
    ports, firewalls = _rd_firewalls(snapshot)
    out: dict[int, set[str]] = {}
    for profile, firewall in firewalls.items():
        for port, program in ports:
            if firewall.evaluate("In", "TCP", port, program).allowed:
                out.setdefault(port, set()).add(profile)
            else:
                out.setdefault(port, set())
    return out


def rd_scope(snapshot: Snapshot) -> dict[int, dict[str, list[str]]]:
    """Remote Desktop port -> profile -> the remote addresses inbound TCP to it is let in
    from (``Firewall.admitted``; [] where it is not let in)."""
    ports, firewalls = _rd_firewalls(snapshot)
    return {
        port: {p: fw.admitted("In", "TCP", port, program) for p, fw in firewalls.items()}
        for port, program in ports
    }


def _wider_addresses(was: Snapshot, now: Snapshot) -> list[tuple[int, str, str]]:
    """(port, before, after) for each Remote Desktop port let in, after the fix, from remote
    addresses the baseline did not admit on a profile where it was already let in (a port
    newly let in on a profile is the profile weakening's)."""
    before, after = rd_scope(was), rd_scope(now)
    out = []
    for port in sorted(after):
        old: list[str] = []
        new: list[str] = []
        where: list[str] = []
        for profile in PROFILES:
            a, b = before.get(port, {}).get(profile, []), after[port][profile]
            if a and b and not all(address_covers(a, item) for item in b):
                where.append(profile)
                old.extend(x for x in a if x not in old)
                new.extend(x for x in b if x not in new)
        if where:
            on = f" on {', '.join(where)}"
            out.append((port, f"from {', '.join(old)}{on}", f"from {', '.join(new)}{on}"))
    return out


def judge_machine(role: Role, before: Snapshot, after: Snapshot) -> list[Weakening]:
    """What the state ``after`` weakens on one machine against ``before`` (the baseline)."""
    found: list[Weakening] = []
    old, new = lookup(before), lookup(after)
    for s in SETTINGS:
        if s.role != role:
            continue
        a, b = s.read(old), s.read(new)
        ra, rb = s.rank(a.value), s.rank(b.value)
        if a.value == b.value:
            continue
        if rb is None or (ra is not None and rb < ra):
            found.append(
                Weakening(
                    role,
                    s.name,
                    f"{s.describe(a.value)} [{a.source}]",
                    f"{s.describe(b.value)} [{b.source}]",
                    s.source,
                )
            )
    if role == "host":
        was, now = rd_exposure(before), rd_exposure(after)
        for port in sorted(now):
            wider = now[port] - was.get(port, set())
            if wider:
                found.append(
                    Weakening(
                        role,
                        f"firewall: inbound TCP {port}",
                        "allowed on " + (", ".join(sorted(was.get(port, set()))) or "no profile"),
                        "allowed on " + ", ".join(sorted(now[port])),
                        _SOURCES["firewall"],
                    )
                )
        for port, old_scope, new_scope in _wider_addresses(before, after):
            found.append(
                Weakening(
                    role,
                    f"firewall: inbound TCP {port} remote addresses",
                    old_scope,
                    new_scope,
                    _SOURCES["remote_address"],
                )
            )
    return found


def judge(baseline: Mapping[str, Snapshot], after: Mapping[str, Snapshot]) -> list[Weakening]:
    """Every weakening on every machine, client first."""
    return [w for role in ROLES for w in judge_machine(role, baseline[role], after[role])]
