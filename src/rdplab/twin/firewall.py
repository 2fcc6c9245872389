"""Windows Defender Firewall twin.

Evaluation as Microsoft Learn describes it ("Windows Firewall rules", see
docs/sources.md): each profile is enabled and configured on its own; a rule applies only
to the profiles it lists; a matching block rule beats a matching allow rule; with no
matching rule the profile's default action for that direction applies.

A rule's remote address scope (``RemoteAddress`` of New-NetFirewallRule and
Get-NetFirewallAddressFilter, docs/sources.md s9) is ``Any`` or a list of addresses,
subnets (prefix or mask), ranges ("a-b") and keywords (LocalSubnet, DNS, DHCP, ...); a rule
applies only to a peer inside it.
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from rdplab.errors import OpError

PROFILES = ("Domain", "Private", "Public")
RULE_FIELDS = (
    "name",
    "display_name",
    "group",
    "direction",
    "action",
    "protocol",
    "local_port",
    "remote_port",
    "program",
    "profiles",
    "enabled",
    "store",
    "remote_address",
)
# Where a rule comes from (Get-NetFirewallRule -PolicyStore ActiveStore, PolicyStoreSourceType):
# "local" (the machine's own PersistentStore) or "gpo" (Group Policy); ops change local rules
# only, a Group Policy rule is changed in its GPO (issue 7 item 9).
LOCAL_STORE = "local"
GPO_STORE = "gpo"
MATCH_KEYS = ("name", "group", "direction", "action", "protocol", "local_port", "remote_port")


def _ports(value: Any) -> list[str]:
    if value in (None, "", "Any"):
        return ["Any"]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return [str(p) for p in value]


def _expand(value: Any) -> list[int]:
    """Ports named by a selector: numbers, lists, "a,b" and "lo-hi" ranges."""
    out: list[int] = []
    for p in _ports(value):
        if p == "Any":
            continue
        lo, _, hi = p.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise OpError(f"firewall selector: {p!r} is not a port, list or range")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


#: RemoteAddress keywords (Set-NetFirewallRule -RemoteAddress; each may end in 4 or 6 to
#: keep to one IP version). Only LocalSubnet names peers the twin can place; the others name
#: infrastructure (DNS, DHCP, WINS servers, the gateway) or network classes the twin does
#: not model, so a twin peer never falls in them.
ADDRESS_KEYWORDS = (
    "LocalSubnet",
    "DNS",
    "DHCP",
    "WINS",
    "DefaultGateway",
    "Internet",
    "Intranet",
    "IntranetRemoteAccess",
    "PlayToDevice",
    "CaptivePortal",
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _keyword(item: str) -> str | None:
    """The canonical keyword an address item names (LocalSubnet4 -> LocalSubnet), or None."""
    low = item.lower()
    for k in ADDRESS_KEYWORDS:
        if low in (k.lower(), k.lower() + "4", k.lower() + "6"):
            return k
    return None


def _networks(item: str) -> list[Network] | None:
    """The IP networks an address, subnet ("a/24", "a/255.255.255.0") or range ("a-b")
    covers; None for anything else."""
    try:
        lo, dash, hi = item.partition("-")
        if dash:
            first, last = ipaddress.ip_address(lo.strip()), ipaddress.ip_address(hi.strip())
            if first.version != last.version or int(first) > int(last):
                return None
            return list(ipaddress.summarize_address_range(first, last))
        return [ipaddress.ip_network(item, strict=False)]
    except ValueError:
        return None


def addresses(value: Any) -> list[str]:
    """A RemoteAddress value as a list: None/""/"Any"/"*" -> ["Any"], "a,b" -> ["a", "b"]."""
    items = _ports(value)
    if any(i in ("Any", "*") or i.lower() == "any" for i in items):
        return ["Any"]
    return items


def check_address(rule: str, item: str) -> None:
    """Refuse what New-NetFirewallRule refuses: an item that is no address, subnet, range or
    keyword."""
    if item != "Any" and _keyword(item) is None and _networks(item) is None:
        raise OpError(
            f"firewall rule {rule}: remote_address {item!r} is not an address, subnet, range"
            f" or keyword ({', '.join(ADDRESS_KEYWORDS)})"
        )


def address_matches(scope: list[str], peer: str, local_subnet: Network | None = None) -> bool:
    """Is ``peer`` inside a remote address scope? ``local_subnet``: the subnet the machine
    is on, for the LocalSubnet keyword."""
    address = ipaddress.ip_address(peer)
    for item in scope:
        if item == "Any":
            return True
        if _keyword(item) == "LocalSubnet":
            if local_subnet is not None and address in local_subnet:
                return True
            continue
        if any(address in net for net in _networks(item) or []):
            return True
    return False


def address_covers(scope: list[str], item: str) -> bool:
    """Does ``scope`` admit every peer ``item`` admits? Keywords cover only themselves (which
    peers they name depends on the machine), "Any" covers everything and is covered only by
    "Any"; addresses, subnets and ranges cover by containment."""
    if "Any" in scope:
        return True
    if item == "Any":
        return False
    kw = _keyword(item)
    if kw is not None:
        return any(_keyword(s) == kw for s in scope)
    nets = _networks(item) or []
    have = [n for s in scope for n in (_networks(s) or [])]
    return bool(nets) and all(
        any(n.version == h.version and n.subnet_of(h) for h in have)  # type: ignore[arg-type]
        for n in nets
    )


MAX_PORT = 65535  # TCP and UDP ports are 16-bit numbers (RFC 9293 section 3.1, RFC 768)


def _check_port(rule: str, p: str) -> None:
    """Refuse what New-NetFirewallRule refuses: a port number or range end above 65535, or a
    range whose ends are reversed. Keywords (RPC, RPC-EPMap, IPHTTPSIn, ...) pass."""
    lo, dash, hi = p.partition("-")
    numbers = [lo, hi] if dash else [lo]
    if not all(n.isdigit() for n in numbers):
        return
    if any(int(n) > MAX_PORT for n in numbers) or (dash and int(lo) > int(hi)):
        raise OpError(f"firewall rule {rule}: {p!r} is not a port or range in 0-{MAX_PORT}")


def port_matches(ports: list[str], port: int) -> bool:
    for p in ports:
        if p == "Any":
            return True
        lo, dash, hi = p.partition("-")
        if dash and lo.isdigit() and hi.isdigit():
            if int(lo) <= port <= int(hi):
                return True
        # keywords such as RPC-EPMap or IPHTTPSIn name dynamic ports, never a fixed one
        elif p.isdigit() and int(p) == port:
            return True
    return False


@dataclass
class Rule:
    name: str
    display_name: str = ""
    group: str = ""
    direction: str = "In"
    action: str = "Allow"
    protocol: str = "TCP"
    local_port: list[str] = field(default_factory=lambda: ["Any"])
    remote_port: list[str] = field(default_factory=lambda: ["Any"])
    program: str = "Any"
    profiles: list[str] = field(default_factory=lambda: ["Any"])
    enabled: bool = True
    store: str = LOCAL_STORE
    remote_address: list[str] = field(default_factory=lambda: ["Any"])

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rule:
        unknown = set(data) - set(RULE_FIELDS)
        if unknown:
            raise OpError(f"firewall rule: unknown field(s) {sorted(unknown)}")
        if "name" not in data:
            raise OpError("firewall rule: missing field 'name'")
        rule = cls(
            name=str(data["name"]),
            display_name=str(data.get("display_name", data["name"])),
            group=str(data.get("group", "")),
            direction=str(data.get("direction", "In")),
            action=str(data.get("action", "Allow")),
            protocol=str(data.get("protocol", "TCP")),
            local_port=_ports(data.get("local_port")),
            remote_port=_ports(data.get("remote_port")),
            program=str(data.get("program", "Any")),
            profiles=_ports(data.get("profiles")),
            enabled=bool(data.get("enabled", True)),
            store=str(data.get("store", LOCAL_STORE)),
            remote_address=addresses(data.get("remote_address")),
        )
        if rule.direction not in ("In", "Out"):
            raise OpError(f"firewall rule {rule.name}: direction must be In or Out")
        if rule.action not in ("Allow", "Block"):
            raise OpError(f"firewall rule {rule.name}: action must be Allow or Block")
        for p in (*rule.local_port, *rule.remote_port):
            _check_port(rule.name, p)
        for a in rule.remote_address:
            check_address(rule.name, a)
        return rule

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "group": self.group,
            "direction": self.direction,
            "action": self.action,
            "protocol": self.protocol,
            "local_port": list(self.local_port),
            "remote_port": list(self.remote_port),
            "program": self.program,
            "profiles": list(self.profiles),
            "enabled": self.enabled,
            "store": self.store,
            "remote_address": list(self.remote_address),
        }

    def matches(self, selector: dict[str, Any]) -> bool:
        for key, want in selector.items():
            if key not in MATCH_KEYS:
                raise OpError(f"firewall selector: unknown key {key!r} (known: {MATCH_KEYS})")
            if key in ("local_port", "remote_port"):
                ports = self.local_port if key == "local_port" else self.remote_port
                if not any(port_matches(ports, port) for port in _expand(want)):
                    return False
            elif str(getattr(self, key)).lower() != str(want).lower():
                return False
        return True

    def applies(
        self,
        direction: str,
        protocol: str,
        port: int,
        profile: str,
        program: str | None = None,
        peer: str | None = None,
        local_subnet: Network | None = None,
    ) -> bool:
        if not self.enabled or self.direction != direction:
            return False
        if (
            self.program != "Any"
            and program is not None
            and self.program.lower() != program.lower()
        ):
            return False
        if self.protocol not in ("Any", protocol):
            return False
        if "Any" not in self.profiles and profile not in self.profiles:
            return False
        if peer is not None and not address_matches(self.remote_address, peer, local_subnet):
            return False
        ports = self.local_port if direction == "In" else self.remote_port
        return port_matches(ports, port)


@dataclass
class Profile:
    enabled: bool = True
    default_inbound: str = "Block"
    default_outbound: str = "Allow"


@dataclass
class Verdict:
    allowed: bool
    reason: str
    rules: list[str]


class Firewall:
    def __init__(
        self, profiles: dict[str, Profile], rules: list[Rule], active_profile: str
    ) -> None:
        self.profiles = profiles
        self.rules = rules
        self.active_profile = active_profile

    def evaluate(
        self,
        direction: str,
        protocol: str,
        port: int,
        program: str | None = None,
        peer: str | None = None,
        local_subnet: Network | None = None,
    ) -> Verdict:
        """Would a packet on the active profile pass? Block beats allow.

        ``program`` is the process that owns the local socket; a rule scoped to another
        program does not apply (None: ignore program scoping). ``peer`` is the remote
        address; a rule whose remote address scope leaves it out does not apply (None:
        ignore address scoping); ``local_subnet`` places LocalSubnet."""
        profile = self.profiles[self.active_profile]
        if not profile.enabled:
            return Verdict(True, f"{self.active_profile} profile firewall is off", [])
        matching = [
            r
            for r in self.rules
            if r.applies(
                direction, protocol, port, self.active_profile, program, peer, local_subnet
            )
        ]
        blocks = [r.name for r in matching if r.action == "Block"]
        if blocks:
            return Verdict(False, f"block rule(s) {', '.join(blocks)} match", blocks)
        allows = [r.name for r in matching if r.action == "Allow"]
        if allows:
            return Verdict(True, f"allowed by {', '.join(allows)}", allows)
        default = profile.default_inbound if direction == "In" else profile.default_outbound
        return Verdict(
            default == "Allow",
            f"no rule matches {direction.lower()}bound {protocol} {port}"
            f"{f' from {peer}' if peer is not None else ''}; "
            f"{self.active_profile} profile default is {default}",
            [],
        )

    def admitted(
        self, direction: str, protocol: str, port: int, program: str | None = None
    ) -> list[str]:
        """The remote address scope a packet on the active profile passes from: ["Any"] with
        the profile's firewall off or a default of Allow, [] when a block rule for every
        address matches or nothing allows, else the allow rules' scopes together. A block
        rule scoped to some addresses narrows what passes; it is left out here, so the
        answer is the widest scope the allow rules open."""
        profile = self.profiles[self.active_profile]
        if not profile.enabled:
            return ["Any"]
        matching = [
            r
            for r in self.rules
            if r.applies(direction, protocol, port, self.active_profile, program)
        ]
        if any(r.action == "Block" and r.remote_address == ["Any"] for r in matching):
            return []
        default = profile.default_inbound if direction == "In" else profile.default_outbound
        scope: list[str] = ["Any"] if default == "Allow" else []
        for r in matching:
            if r.action == "Allow":
                scope.extend(a for a in r.remote_address if a not in scope)
        return ["Any"] if "Any" in scope else scope

    # -- ops --------------------------------------------------------------------------------
    def add(self, data: dict[str, Any]) -> bool:
        rule = Rule.from_json(data)
        if rule.store != LOCAL_STORE:
            raise OpError(
                f"firewall rule {rule.name}: rules are added to the local store; a rule of"
                f" store {rule.store!r} is made where that store is kept (a GPO)"
            )
        for i, existing in enumerate(self.rules):
            if existing.store != LOCAL_STORE:
                continue
            if existing.name.lower() == rule.name.lower():
                if existing == rule:
                    return False
                self.rules[i] = rule
                return True
        self.rules.append(rule)
        return True

    def select(self, selector: dict[str, Any]) -> list[Rule]:
        """The local rules a change selects: ops never touch Group Policy rules."""
        if not selector:
            raise OpError("firewall selector is empty: refusing to touch every rule")
        return [r for r in self.rules if r.store == LOCAL_STORE and r.matches(selector)]

    def set(self, selector: dict[str, Any], enabled: bool | None, action: str | None) -> int:
        changed = 0
        for rule in self.select(selector):
            before = (rule.enabled, rule.action)
            if enabled is not None:
                rule.enabled = enabled
            if action is not None:
                if action not in ("Allow", "Block"):
                    raise OpError(f"fw.rule.set: action must be Allow or Block, not {action!r}")
                rule.action = action
            changed += before != (rule.enabled, rule.action)
        return changed

    def remove(self, selector: dict[str, Any]) -> int:
        doomed = self.select(selector)
        self.rules = [r for r in self.rules if r not in doomed]
        return len(doomed)

    # -- snapshot ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "active_profile": self.active_profile,
            "profiles": {n: copy.copy(vars(p)) for n, p in self.profiles.items()},
            "rules": {r.name: r.to_json() for r in self.rules},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Firewall:
        unknown = set(data) - {"active_profile", "profiles", "rules"}
        if unknown:
            raise OpError(f"firewall: unknown field(s) {sorted(unknown)}")
        profiles = {}
        for name in PROFILES:
            raw = (data.get("profiles") or {}).get(name, {})
            bad = set(raw) - {"enabled", "default_inbound", "default_outbound"}
            if bad:
                raise OpError(f"firewall profile {name}: unknown field(s) {sorted(bad)}")
            for key in ("default_inbound", "default_outbound"):
                if raw.get(key, "Block") not in ("Allow", "Block"):
                    raise OpError(f"firewall profile {name}: {key} must be Allow or Block")
            profiles[name] = Profile(**raw)
        rules = [Rule.from_json(r) for r in data.get("rules", [])]
        active = data.get("active_profile", "Private")
        if active not in PROFILES:
            raise OpError(f"firewall: active_profile must be one of {PROFILES}")
        return cls(profiles, rules, active)
