"""What a fault is made of. Each fault lives in one module of this package, whole:
its symptom, the story for trainees, how to break it, how to find it, how to fix it, and
the sources its facts come from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rdplab.facts import Facts
from rdplab.network import Network
from rdplab.ops import Op

Role = Literal["client", "host", "router"]
#: The Windows machines every lab has. A lab whose network has a router adds "router"
#: (``Scenario.roles``): a Linux NAT gateway, with its own op vocabulary (router_ops).
ROLES: tuple[Role, ...] = ("client", "host")
ALL_ROLES: tuple[Role, ...] = ("client", "host", "router")
#: ``unlabelled``: a lab file's own fix, which carries no label (the security judge decides).
Risk = Literal["safe", "lowers-security", "unlabelled"]
STAGES = ("name-resolution", "tcp", "x224", "tls", "credssp", "licensing")


# 0x904 (2308) is disconnectReasonAtClientWinsockFDCLOSE, "socket closed"; extended 0x7 is
# exDiscReasonServerDeniedConnection (Microsoft Learn, IMsTscAxEvents::OnDisconnected and
# ExtendedDisconnectReasonCode; docs/sources.md s8): the connection closed before a session
# existed. That fits every failure up to and including TLS.
SOCKET_CLOSED = ("0x904", "0x7")
CODE_SOURCE = (
    "Microsoft Learn: disconnect reason 0x904 = socket closed, extended 0x7 = server denied"
)


@dataclass(frozen=True)
class Symptom:
    """What the user sees and where the connection stops.

    ``error_code``/``extended_code`` are None where the client does not show 0x904 (the
    CredSSP failure has its own dialog); ``code_source`` says where the codes come from."""

    stage: str
    message: str
    error_code: str | None = SOCKET_CLOSED[0]
    extended_code: str | None = SOCKET_CLOSED[1]
    negotiation_failure: int | None = None  # [MS-RDPBCGR] 2.2.1.2.2 failureCode
    code_source: str = CODE_SOURCE

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "error_code": self.error_code,
            "extended_code": self.extended_code,
            "message": self.message,
            "negotiation_failure": self.negotiation_failure,
            "code_source": self.code_source,
        }


@dataclass(frozen=True)
class Fix:
    """One way to repair the fault: ops per machine, one batch each."""

    id: str
    summary: str
    ops: Mapping[Role, tuple[Op, ...]]
    risk: Risk = "safe"
    leaves: tuple[str, ...] = ()  # state paths this fix may leave changed ("host:registry/..")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "risk": self.risk,
            "summary": self.summary,
            "ops": {role: [o.to_json() for o in ops] for role, ops in self.ops.items()},
            "leaves": list(self.leaves),
        }


@dataclass(frozen=True)
class Placement:
    """The fault put on one role, in one variant: the ops that break it and its fixes."""

    on: Role
    breaks: Mapping[Role, tuple[Op, ...]]
    fixes: tuple[Fix, ...]
    variant: str = "default"
    leaves: tuple[str, ...] = ()  # harmless break residue the no-collateral check allows

    def fix(self, allow_lowers_security: bool) -> Fix:
        """The fix to apply: the first safe one, or the first of all when opted in."""
        if allow_lowers_security:
            risky = [f for f in self.fixes if f.risk == "lowers-security"]
            if risky:
                return risky[0]
        return next(f for f in self.fixes if f.risk == "safe")

    def withheld(self, allow_lowers_security: bool) -> list[Fix]:
        chosen = self.fix(allow_lowers_security)
        return [f for f in self.fixes if f.risk == "lowers-security" and f is not chosen]


@dataclass(frozen=True)
class Finding:
    fault: str
    role: Role
    summary: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "role": self.role,
            "summary": self.summary,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True)
class DetectContext:
    client: Facts
    host: Facts
    net: Network
    router: Facts | None = None  # the router's facts, in a lab that has one

    def facts(self, role: Role) -> Facts:
        if role == "router":
            if self.router is None:
                raise KeyError("router")
            return self.router
        return self.client if role == "client" else self.host


@dataclass(frozen=True)
class Hides:
    """A declaration that this fault hides another from the detectors on real Windows:
    while both are in place, the other fault's broken state cannot be seen in the facts
    (this fault replaced it, or nothing that shows it can be read). ``reason`` says why,
    with its source or, where the sources are silent, the stated reasoning. The lab then
    expects the hidden fault to be reported as hidden (not found), and found once this
    fault's fix has run. Hiding from the connection (an earlier stage fails first) needs
    no declaration: it follows from each fault's ``Symptom.stage``."""

    fault: str
    reason: str
    on: Role | None = None  # where the hidden fault sits (None: any machine)


Detector = Callable[[DetectContext], list[Finding]]
#: What a fault needs gathered on a machine beyond the defaults, given the facts of the
#: machines gathered before it (the gather step gathers the host first): extra gather
#: arguments by name, e.g. ``{"probe_urls": [...]}`` for the client.
GatherNeeds = Callable[[Role, Mapping[Role, Facts]], Mapping[str, list[str]]]


def no_gather_needs(role: Role, gathered: Mapping[Role, Facts]) -> Mapping[str, list[str]]:
    return {}


@dataclass(frozen=True)
class Fault:
    id: str
    title: str
    symptom: Symptom
    explanation: str
    placements: tuple[Placement, ...]
    detect: Detector
    sources: tuple[str, ...]
    baselines: Mapping[Role, str] = field(default_factory=dict)  # needs these machines
    transport: str | None = None  # needs this transport (None: any)
    gather_needs: GatherNeeds = no_gather_needs  # extra facts its detector reads
    hides: tuple[Hides, ...] = ()  # faults it hides from the detectors (declared, with why)
    #: the client site it needs (a network fault: "outside" or "vpn"; None: any)
    client_site: str | None = None

    @property
    def needs_router(self) -> bool:
        """It changes the router (or is placed on it): the lab needs ``network.router``."""
        return any(
            p.on == "router" or "router" in p.breaks or any("router" in f.ops for f in p.fixes)
            for p in self.placements
        )

    @property
    def machines(self) -> tuple[Role, ...]:
        """Every machine its breaks and fixes touch, in ALL_ROLES order."""
        touched = {p.on for p in self.placements}
        for p in self.placements:
            touched.update(p.breaks)
            for f in p.fixes:
                touched.update(f.ops)
        return tuple(r for r in ALL_ROLES if r in touched)

    @property
    def roles(self) -> tuple[Role, ...]:
        return tuple(dict.fromkeys(p.on for p in self.placements))

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.variant for p in self.placements))

    def placement(self, on: Role, variant: str = "default") -> Placement:
        for p in self.placements:
            if p.on == on and p.variant == variant:
                return p
        raise KeyError((on, variant))

    def to_json(self) -> dict[str, Any]:
        first = self.placements[0]
        return {
            "id": self.id,
            "title": self.title,
            "roles": list(self.roles),
            "machines": list(self.machines),
            "variants": list(self.variants),
            "symptom": self.symptom.to_json(),
            "risk": first.fix(False).risk,
            "explanation": self.explanation,
            "break": [
                {
                    "on": p.on,
                    "variant": p.variant,
                    "ops": {role: [o.to_json() for o in ops] for role, ops in p.breaks.items()},
                }
                for p in self.placements
            ],
            "fix": [o.to_json() for ops in first.fix(False).ops.values() for o in ops],
            "fixes": [
                dict(f.to_json(), on=p.on, variant=p.variant)
                for p in self.placements
                for f in p.fixes
            ],
            "needs": {
                "baselines": dict(self.baselines),
                "transport": self.transport,
                "client_site": self.client_site,
                "router": self.needs_router,
            },
            "hides": [{"fault": h.fault, "on": h.on, "reason": h.reason} for h in self.hides],
            "sources": list(self.sources),
        }


def finding(fault: str, role: Role, summary: str, **evidence: Any) -> Finding:
    return Finding(fault, role, summary, evidence)


def op(op_name: str, /, **args: Any) -> Op:
    """Shorthand for fault modules: ``op("reg.set", key=..., name=..., ...)``."""
    return Op(op_name, args)


def reg_dword(key: str, name: str, data: int | str) -> Op:
    return op("reg.set", key=key, name=name, type="REG_DWORD", data=data)
