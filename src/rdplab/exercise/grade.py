"""Grading. ``grade_answer``: a trainee's causes and fixes against the exercise's causes.
``grade_repair``: a real lab's state after a repair made by hand.

Answer score: each cause is worth 1, half for naming it (``FAULT@ROLE``, or ``FAULT``
alone, which names the fault wherever the exercise placed it) and half for choosing a safe
fix for it (a quarter when the only fix chosen for it lowers security). The total is
divided by the number of causes plus half a point for each wrong cause, each fix that
fixes none of the causes, and each fix that lowers security, so anything extra costs.
1.0 only for every cause named and a safe fix for each, and nothing else.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from rdplab import catalog as cat
from rdplab.catalog.base import ALL_ROLES, Fix, Role
from rdplab.errors import RdplabError
from rdplab.exercise.pick import Cause
from rdplab.lab import Scenario

#: the view that shows each kind of op's state (hints point there)
_AREA_OF_OP = {
    "reg": "registry",
    "fw": "firewall",
    "svc": "services",
    "cert": "certificates",
    "machinekeys": "certificates",
    "hosts": "dns",
    "dns": "dns",
    "hotfix": "updates",
}


@dataclass(frozen=True)
class Named:
    fault: str
    role: Role | None  # None: the fault wherever it is placed

    @property
    def label(self) -> str:
        return self.fault if self.role is None else f"{self.fault}@{self.role}"

    def names(self, cause: Cause) -> bool:
        return self.fault == cause.fault and self.role in (None, cause.role)


def parse_cause(text: str) -> Named:
    """``FAULT`` or ``FAULT@ROLE``; an unknown fault or role is the user's mistake."""
    fault, _, role = text.strip().partition("@")
    cat.get(fault)  # UnknownFaultError with a did-you-mean
    if role and role not in ALL_ROLES:
        raise RdplabError(f"cause {text!r}: role must be client, host or router (got {role!r})")
    return Named(fault, next((r for r in ALL_ROLES if r == role), None))


def all_fix_ids() -> set[str]:
    return {fx.id for f in cat.catalog().values() for p in f.placements for fx in p.fixes}


def check_fix_id(fix_id: str) -> None:
    known = all_fix_ids()
    if fix_id not in known:
        close = difflib.get_close_matches(fix_id, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RdplabError(
            f"unknown fix id {fix_id!r} ({hint}`rdplab explain FAULT` lists a fault's fixes)"
        )


def fixes_of(cause: Cause) -> tuple[Fix, ...]:
    return cat.get(cause.fault).placement(cause.role, cause.variant).fixes


def safe_fix(cause: Cause) -> Fix:
    return next(f for f in fixes_of(cause) if f.risk == "safe")


def revealed(causes: list[Cause]) -> dict[str, Any]:
    """The answer as ``new --reveal`` prints it."""
    return {
        "causes": [c.to_json() for c in causes],
        "fixes": list(dict.fromkeys(safe_fix(c).id for c in causes)),
    }


def hint(cause: Cause, scenario: Scenario | None = None) -> str:
    """Where to look for a missed cause: its machine, the stage it breaks, the view."""
    fault = cat.get(cause.fault)
    placement = fault.placement(cause.role, cause.variant)
    ops = list(placement.breaks.get(cause.role, ())) or [
        o for o in safe_fix(cause).ops.get(cause.role, ())
    ]
    areas: list[str] = []
    for o in ops:
        area = _AREA_OF_OP.get(o.name.split(".")[0])
        if area == "registry" and "mslicensing" in str(o.args.get("key", "")).lower():
            area = "licensing"
        if area and area not in areas:
            areas.append(area)
    where = " or ".join(f"`rdplab exercise inspect {cause.role} {a}`" for a in areas)
    return (
        f"a cause on the {cause.role} is not named: it breaks the connection at the"
        f" {fault.symptom.stage} stage" + (f"; look with {where}" if where else "")
    )


@dataclass
class CauseVerdict:
    fault: str
    role: Role
    verdict: str  # found | missed
    fixes: list[str] = field(default_factory=list)
    fix_verdict: str = "none"  # safe | lowers-security | none
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "fault": self.fault,
            "role": self.role,
            "verdict": self.verdict,
            "fixes": self.fixes,
            "fix_verdict": self.fix_verdict,
        }
        if self.hint:
            out["hint"] = self.hint
        return out


@dataclass
class Grade:
    score: float
    causes: list[CauseVerdict]
    wrong: list[str]
    fixes: list[dict[str, Any]]

    @property
    def hints(self) -> list[str]:
        return [c.hint for c in self.causes if c.hint]

    def to_json(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "causes": [c.to_json() for c in self.causes],
            "wrong": self.wrong,
            "fixes": self.fixes,
            "hints": self.hints,
        }


def grade_answer(causes: list[Cause], named: list[str], fix_ids: list[str]) -> Grade:
    """Grade the trainee's causes and fixes (ids are checked first: a typo is an error,
    not a wrong answer)."""
    parsed = [parse_cause(n) for n in named]
    for f in fix_ids:
        check_fix_id(f)
    fix_ids = list(dict.fromkeys(fix_ids))
    verdicts = []
    points = 0.0
    for c in causes:
        found = any(n.names(c) for n in parsed)
        chosen = {fx.id: fx.risk for fx in fixes_of(c) if fx.id in fix_ids}
        fv = "safe" if "safe" in chosen.values() else "lowers-security" if chosen else "none"
        points += (0.5 if found else 0.0) + {"safe": 0.5, "lowers-security": 0.25}.get(fv, 0.0)
        verdicts.append(
            CauseVerdict(
                c.fault,
                c.role,
                "found" if found else "missed",
                sorted(chosen),
                fv,
                None if found else hint(c),
            )
        )
    wrong = [n.label for n in parsed if not any(n.names(c) for c in causes)]
    fixes = []
    extras = len(wrong)
    for f in fix_ids:
        targets = [c for c in causes if any(fx.id == f for fx in fixes_of(c))]
        if not targets:
            fixes.append({"fix": f, "verdict": "not-a-fix", "for": []})
            extras += 1
            continue
        risk = next(fx.risk for fx in fixes_of(targets[0]) if fx.id == f)
        extras += risk == "lowers-security"
        fixes.append({"fix": f, "verdict": risk, "for": [c.label for c in targets]})
    score = points / (len(causes) + 0.5 * extras) if causes else 0.0
    return Grade(round(score, 3), verdicts, wrong, fixes)


# -- a repair on a real lab --------------------------------------------------------------

#: How ``check`` judges security: by state, not by the fix's label (rdplab.security).
SECURITY_BASIS = (
    "rdplab.security: each security-relevant setting's effective value after the repair"
    " against the healthy baseline (docs/sources.md s13)"
)


def grade_repair(run: Any, causes: list[Cause]) -> dict[str, Any]:
    """Verdicts and a score for a repair: each cause repaired (its detector is quiet),
    the connection succeeds, nothing changed beyond what the causes' fixes change, and
    security is not lowered. Score: half for the causes repaired (in proportion), a
    quarter for the connection, an eighth each for no collateral and security kept."""
    if run.error:
        raise RdplabError(f"check stopped at {run.failed_step}: {run.error}")
    found = {(f.fault, f.role) for f in run.findings}
    cause_keys = {(c.fault, c.role) for c in causes}
    verdicts = [
        {
            "fault": c.fault,
            "role": c.role,
            "verdict": "still-broken" if (c.fault, c.role) in found else "repaired",
        }
        for c in causes
    ]
    others = [f.to_json() for f in run.findings if (f.fault, f.role) not in cause_keys]
    conn = run.connection
    connected = bool(conn is not None and conn.ok)
    unexpected = {
        role: [{"setting": p, "before": b, "after": a} for p, b, a in changes]
        for role, changes in run.unexpected_diff.items()
    }
    lowered = [w.to_json() for w in run.weakened]
    repaired = sum(v["verdict"] == "repaired" for v in verdicts)
    score = (
        0.5 * repaired / len(causes)
        + 0.25 * connected
        + 0.125 * (not unexpected and not others)
        + 0.125 * (not lowered)
    )
    return {
        "score": round(score, 3),
        "causes": verdicts,
        "connection": {
            "ok": connected,
            "failed_stage": conn.failed_stage if conn else None,
            "error_code": conn.error_code if conn else None,
            "not_probed": dict(conn.not_probed) if conn else {},
        },
        "new_findings": others,
        "unexpected_changes": unexpected,
        "security_lowered": lowered,
        "security_basis": SECURITY_BASIS,
    }
