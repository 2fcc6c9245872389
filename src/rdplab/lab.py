"""Lab files (labs/*.yaml): machines, network and scenarios, validated with line numbers.

The format is documented in the README ("Writing a lab file"). Every error names the file,
the line and the field, and nothing runs until the whole file is valid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rdplab import baselines, yamlfile
from rdplab import catalog as cat
from rdplab.catalog.base import ALL_ROLES, ROLES, STAGES, Fault, Fix, Placement, Role
from rdplab.errors import LabFileError, OpError
from rdplab.network import Network, RouterNet
from rdplab.ops import VOCABULARY, Op, render_op, validate_op
from rdplab.plan import Part, conflicts

_ID = r"^[a-z0-9][a-z0-9-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MachineSpec(_Strict):
    baseline: str
    computer_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,15}$")


class Machines(_Strict):
    client: MachineSpec
    host: MachineSpec


class RouterSpec(_Strict):
    """``network.router``: the NAT gateway between the outside network and the lab LAN."""

    lan_address: str = RouterNet.lan_address
    outside_address: str = RouterNet.outside_address
    client_outside_address: str = RouterNet.client_outside_address
    client_vpn_address: str = RouterNet.client_vpn_address
    router_vpn_address: str = RouterNet.router_vpn_address
    moved_address: str = RouterNet.moved_address
    tunnel_mtu: int = Field(default=RouterNet.tunnel_mtu, ge=576, le=1500)


class NetworkSpec(_Strict):
    host_name: str = Network.host_name
    host_address: str = Network.host_address
    client_name: str = Network.client_name
    client_address: str = Network.client_address
    stale_address: str = Network.stale_address
    pki_name: str = Network.pki_name
    pki_address: str = Network.pki_address
    port: int = Field(default=Network.port, ge=1, le=65535)
    router: RouterSpec | None = None


class FaultRef(_Strict):
    fault: str
    on: Literal["client", "host", "router"] | None = None
    variant: str = "default"


class FixSpec(_Strict):
    """A scenario's own fix: ops per machine (``rdplab list --json``'s form) or a script."""

    ops: dict[str, list[Any]] | None = None
    leaves: list[str] = []
    script: str | None = None
    on: Literal["client", "host"] | None = None


class ScenarioSpec(_Strict):
    id: str = Field(pattern=_ID)
    description: str = ""
    faults: list[Any]
    fix: FixSpec | None = None
    baselines: dict[Literal["client", "host"], str] = {}
    transport: Literal["tcp", "websocket"] | None = None
    client_site: Literal["lan", "outside", "vpn"] | None = None
    allow_lowers_security: bool = False


class LabSpec(_Strict):
    name: str = Field(default="lab", pattern=_ID)
    description: str = ""
    machines: Machines
    network: NetworkSpec = NetworkSpec()
    scenarios: list[ScenarioSpec] = Field(min_length=1)


@dataclass(frozen=True)
class PlacedFault:
    fault: Fault
    placement: Placement

    @property
    def label(self) -> str:
        p = self.placement
        extra = "" if p.variant == "default" else f"/{p.variant}"
        return f"{self.fault.id}@{p.on}{extra}"


@dataclass(frozen=True)
class Masked:
    """One placed fault hidden by others: ``kind`` is ``detectors`` (declared in the
    catalog, ``Fault.hides``) or ``connection`` (an earlier stage fails first)."""

    fault: str  # the hidden fault's label, e.g. licensing-cache-stale@client
    by: tuple[str, ...]  # the labels of what hides it
    kind: Literal["detectors", "connection"]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"fault": self.fault, "by": list(self.by), "kind": self.kind, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.fault} hidden from the {self.kind} by {', '.join(self.by)}: {self.reason}"


@dataclass(frozen=True)
class ScenarioFix:
    """The fix a scenario brings along; it replaces the catalog's fixes for that scenario.

    ``fix`` holds the ops per machine and the state it may leave changed (its risk is
    ``unlabelled``: the security judge decides); a script fix has no ops but ``script``, the
    Windows PowerShell file run on machine ``on``. ``origin`` says where it came from
    (``labs/mine.yaml:12``, or ``catalog`` when a test forces a catalog fix)."""

    fix: Fix
    origin: str
    script: Path | None = None
    on: Role | None = None


@dataclass(frozen=True)
class Scenario:
    id: str
    description: str
    faults: tuple[PlacedFault, ...]
    baselines: dict[Role, str]
    computer_names: dict[Role, str]
    network: Network
    allow_lowers_security: bool = False
    line: int | None = None
    baseline_search: tuple[Path, ...] = ()
    fix: ScenarioFix | None = None

    @property
    def healthy(self) -> bool:
        return not self.faults

    def placed(self) -> set[tuple[str, Role]]:
        """Every (fault, machine) the scenario puts in place."""
        return {(pf.fault.id, pf.placement.on) for pf in self.faults}

    @property
    def roles(self) -> tuple[Role, ...]:
        """The machines of this scenario: client and host, and the router where the lab's
        network has one."""
        return (*ROLES, "router") if self.network.router is not None else ROLES

    def expected(self) -> set[tuple[str, Role]]:
        """What the detectors must find after the break: every placed fault except those
        another placed fault hides (``hidden``)."""
        return self.placed() - set(self.hidden())

    def hidden(self) -> dict[tuple[str, Role], Masked]:
        """Placed faults that another placed fault hides from the detectors, by the
        catalog's declarations (``Fault.hides``)."""
        out: dict[tuple[str, Role], Masked] = {}
        for by in self.faults:
            for h in by.fault.hides:
                for pf in self.faults:
                    if pf.fault.id == h.fault and h.on in (None, pf.placement.on):
                        out[(pf.fault.id, pf.placement.on)] = Masked(
                            pf.label, (by.label,), "detectors", h.reason
                        )
        return out

    def unreached(self) -> list[Masked]:
        """Placed faults the connection never reaches: an earlier stage fails first (each
        fault's ``Symptom.stage``, in the order of ``STAGES``). After the faults at the
        first failing stage are fixed, the connection gets further and meets them."""
        if not self.faults:
            return []
        first = min(STAGES.index(pf.fault.symptom.stage) for pf in self.faults)
        return unreached_past(
            STAGES[first], [(pf.label, pf.fault.symptom.stage) for pf in self.faults]
        )

    def masking(self) -> list[Masked]:
        """Everything hidden in this scenario, from the detectors or from the connection."""
        return list(self.hidden().values()) + self.unreached()


def unreached_past(failed: str, faults: Iterable[tuple[str, str]]) -> list[Masked]:
    """Of ``faults`` (label, the stage its symptom is at), those past the stage the
    connection fails at, hidden from it by the faults at that stage."""
    faults = list(faults)
    at = tuple(label for label, stage in faults if stage == failed) or (f"the {failed} failure",)
    return [
        Masked(
            label,
            at,
            "connection",
            f"the connection stops at {failed} and never reaches {stage}",
        )
        for label, stage in faults
        if STAGES.index(stage) > STAGES.index(failed)
    ]


@dataclass
class Lab:
    path: Path
    name: str
    description: str
    scenarios: list[Scenario] = field(default_factory=list)
    # what ``compose`` needs to build more scenarios on the same machines and network
    _doc: yamlfile.Located | None = field(default=None, repr=False, compare=False)
    _spec: LabSpec | None = field(default=None, repr=False, compare=False)
    _search: tuple[Path, ...] = field(default=(), repr=False, compare=False)

    def scenario(self, sid: str) -> Scenario:
        for s in self.scenarios:
            if s.id == sid:
                return s
        raise KeyError(sid)

    def compose(self, sid: str, faults: list[dict[str, str]]) -> Scenario:
        """A scenario that is not in the file, on the file's machines and network, checked
        as a scenario of the file would be (a conflict raises ``LabFileError``). ``faults``
        are fault references as the file writes them: ``{fault, on, variant}``."""
        if self._doc is None or self._spec is None:
            raise LabFileError(str(self.path), "this lab was not loaded from a file")
        spec = ScenarioSpec(id=sid, faults=list(faults))
        loc: yamlfile.PathKey = ("scenarios", len(self.scenarios))
        return _scenario(self._doc, self._spec, spec, loc, self._search)


def load_lab(path: str | Path, baseline_dir: Path | None = None) -> Lab:
    doc = yamlfile.load(path)
    if not isinstance(doc.data, dict):
        raise LabFileError(
            str(doc.path), "a lab file must be a mapping with machines and scenarios", 1
        )
    spec = doc.validate(LabSpec)
    search = _search(doc, baseline_dir)
    for role in ROLES:
        _check_baseline(
            doc, getattr(spec.machines, role).baseline, ("machines", role, "baseline"), search
        )
    lab = Lab(doc.path, spec.name, spec.description, _doc=doc, _spec=spec, _search=search)
    seen: dict[str, int] = {}
    for i, sc in enumerate(spec.scenarios):
        loc: yamlfile.PathKey = ("scenarios", i)
        if sc.id in seen:
            raise doc.error(
                (*loc, "id"), f"duplicate scenario id {sc.id!r} (first at scenarios[{seen[sc.id]}])"
            )
        seen[sc.id] = i
        lab.scenarios.append(_scenario(doc, spec, sc, loc, search))
    return lab


def _search(doc: yamlfile.Located, baseline_dir: Path | None) -> tuple[Path, ...]:
    search = baselines.baseline_dirs(
        baseline_dir or doc.path.parent.parent / "fixtures" / "baselines"
    )
    return tuple(dict.fromkeys(p.resolve() for p in search))


def fault_scenario(
    path: str | Path, fault: str, on: Role | None = None, variant: str = "default"
) -> Scenario:
    """One fault on a lab file's machines and network (``rdplab break``): the scenario the
    file would make of ``faults: [{fault: F, on: R, variant: V}]``. An unknown fault id, a
    role the fault has no placement on or an unknown variant is one clear error."""
    f = cat.get(fault)
    if on is not None and on not in f.roles:
        raise LabFileError(
            str(path), f"fault {f.id} cannot be put on {on} (roles: {', '.join(f.roles)})"
        )
    if variant not in f.variants:
        raise LabFileError(
            str(path),
            f"fault {f.id} has no variant {variant!r} (variants: {', '.join(f.variants)})",
        )
    load_lab(path)  # the file itself is checked first: its errors name its lines
    doc = yamlfile.load(path)
    spec = doc.validate(LabSpec)
    ref: dict[str, str] = {"fault": f.id, "variant": variant, **({"on": on} if on else {})}
    sc = ScenarioSpec(id=f"break-{f.id}", faults=[ref])
    return _scenario(doc, spec, sc, ("scenarios", len(spec.scenarios)), _search(doc, None))


def _check_baseline(
    doc: yamlfile.Located, name: str, loc: yamlfile.PathKey, search: tuple[Path, ...]
) -> None:
    try:
        baselines.load_baseline(name, search)
    except LabFileError as exc:
        if exc.path.endswith(".yaml"):
            raise  # the baseline file itself is broken: its own error is the useful one
        raise doc.error(loc, exc.message.split(": ", 1)[-1]) from None


def _scenario(
    doc: yamlfile.Located,
    spec: LabSpec,
    sc: ScenarioSpec,
    loc: yamlfile.PathKey,
    search: tuple[Path, ...],
) -> Scenario:
    placed: list[PlacedFault] = []
    wanted_baselines: dict[Role, tuple[str, str]] = {}
    transport: tuple[str, str] | None = None
    site: tuple[str, str] | None = None
    for j, ref in enumerate(sc.faults):
        floc = (*loc, "faults", j)
        if isinstance(ref, str):
            r = FaultRef(fault=ref)
        elif isinstance(ref, dict):
            r = doc.validate(FaultRef, ref, base=floc)
        else:
            raise doc.error(floc, "must be a fault id or a mapping like {fault: ID, on: host}")
        if r.fault not in cat.catalog():
            raise doc.error(
                (*floc, "fault") if not isinstance(ref, str) else floc,
                f"unknown fault id {r.fault!r} (known: {', '.join(sorted(cat.catalog()))})",
            )
        fault = cat.get(r.fault)
        if r.on is not None and r.on not in fault.roles:
            raise doc.error(
                (*floc, "on"),
                f"fault {fault.id} cannot be put on {r.on} (roles: {', '.join(fault.roles)})",
            )
        if r.variant not in fault.variants:
            raise doc.error(
                (*floc, "variant"),
                f"fault {fault.id} has no variant {r.variant!r}"
                f" (variants: {', '.join(fault.variants)})",
            )
        roles = [r.on] if r.on else [p.on for p in fault.placements if p.variant == r.variant]
        for role in dict.fromkeys(roles):
            try:
                pl = fault.placement(role, r.variant)
            except KeyError:
                raise doc.error(
                    floc, f"fault {fault.id} has no variant {r.variant!r} on {role}"
                ) from None
            pf = PlacedFault(fault, pl)
            if any(p.fault.id == fault.id and p.placement.on == role for p in placed):
                raise doc.error(floc, f"fault {fault.id} is placed on {role} twice")
            placed.append(pf)
        for role, name in fault.baselines.items():
            if role in wanted_baselines and wanted_baselines[role][0] != name:
                raise doc.error(
                    floc,
                    f"fault {fault.id} needs {role} baseline {name!r} but"
                    f" {wanted_baselines[role][1]} needs {wanted_baselines[role][0]!r}",
                )
            wanted_baselines[role] = (name, fault.id)
        if fault.transport:
            if transport and transport[0] != fault.transport:
                raise doc.error(
                    floc,
                    f"fault {fault.id} needs transport {fault.transport},"
                    f" {transport[1]} needs {transport[0]}",
                )
            transport = (fault.transport, fault.id)
        if fault.needs_router and spec.network.router is None:
            raise doc.error(
                floc,
                f"fault {fault.id} needs a router between client and host: add network.router"
                " to the lab file (README, 'Writing a lab file')",
            )
        if fault.client_site:
            if site and site[0] != fault.client_site:
                raise doc.error(
                    floc,
                    f"fault {fault.id} needs client_site {fault.client_site},"
                    f" {site[1]} needs {site[0]}",
                )
            site = (fault.client_site, fault.id)
    if sc.client_site and site and sc.client_site != site[0]:
        raise doc.error((*loc, "client_site"), f"fault {site[1]} needs client_site {site[0]}")
    client_site = sc.client_site or (site[0] if site else "lan")
    if client_site != "lan" and spec.network.router is None:
        raise doc.error(
            (*loc, "client_site"),
            f"client_site {client_site} needs a router: add network.router to the lab file",
        )
    chosen: dict[Role, str] = {}
    for role in ROLES:
        default = getattr(spec.machines, role).baseline
        if role in sc.baselines:
            chosen[role] = sc.baselines[role]
            _check_baseline(doc, chosen[role], (*loc, "baselines", role), search)
            need = wanted_baselines.get(role)
            if need and need[0] != chosen[role]:
                raise doc.error(
                    (*loc, "baselines", role), f"fault {need[1]} needs {role} baseline {need[0]!r}"
                )
        else:
            chosen[role] = wanted_baselines.get(role, (default, ""))[0]
            _check_baseline(doc, chosen[role], (*loc, "faults"), search)
    if sc.transport and transport and sc.transport != transport[0]:
        raise doc.error((*loc, "transport"), f"fault {transport[1]} needs transport {transport[0]}")
    net_spec = spec.network.model_dump(exclude={"router"})
    router = spec.network.router
    network = Network(
        **net_spec,
        transport=sc.transport or (transport[0] if transport else "tcp"),  # type: ignore[arg-type]
        router=RouterNet(**router.model_dump()) if router is not None else None,
        client_site=client_site,  # type: ignore[arg-type]
    )
    names: dict[Role, str] = {
        role: getattr(spec.machines, role).computer_name or _computer_name(network, role)
        for role in ROLES
    }
    _check_conflicts(doc, placed, (*loc, "faults"), network)
    fix = _scenario_fix(doc, sc, loc, network) if sc.fix is not None else None
    return Scenario(
        id=sc.id,
        description=sc.description,
        faults=tuple(placed),
        baselines=chosen,
        computer_names=names,
        network=network,
        allow_lowers_security=sc.allow_lowers_security,
        line=doc.line_of(loc),
        baseline_search=search,
        fix=fix,
    )


def break_parts(faults: Iterable[PlacedFault], role: Role, network: Network) -> list[Part]:
    """Each placed fault's break ops on ``role``, rendered for the network: what
    ``rdplab.plan`` composes into the break batch, and checks for conflicts."""
    ctx = network.context()
    return [
        Part(pf.label, tuple(render_op(o, ctx) for o in pf.placement.breaks.get(role, ())))
        for pf in faults
        if pf.placement.breaks.get(role)
    ]


def _check_conflicts(
    doc: yamlfile.Located, placed: list[PlacedFault], loc: yamlfile.PathKey, network: Network
) -> None:
    """Two faults that want different end states of one thing on one machine cannot both
    be in place (``rdplab.plan.conflicts``): the usual file/line/field error."""
    for role in ALL_ROLES:
        clash = conflicts(break_parts(placed, role, network))
        if clash:
            raise doc.error(loc, f"faults conflict on {role}: {clash[0]}")


class OpSpecEntry(_Strict):
    op: str
    args: dict[str, Any] = {}


def _scenario_fix(
    doc: yamlfile.Located, sc: ScenarioSpec, loc: yamlfile.PathKey, network: Network
) -> ScenarioFix:
    """Check a scenario's ``fix:`` the way the catalog's fixes are checked: known ops,
    well-typed arguments, known roles, placeholders the lab can fill; a script exists."""
    spec = sc.fix
    assert spec is not None
    floc = (*loc, "fix")
    origin = f"{doc.path}:{doc.line_of(floc)}"
    if (spec.ops is None) == (spec.script is None):
        raise doc.error(floc, "give either ops (per machine) or script (with on: client|host)")
    if spec.script is not None:
        if spec.on is None:
            raise doc.error(floc, "a script fix needs on: client or on: host")
        path = (doc.path.parent / spec.script).resolve()
        if not path.is_file():
            raise doc.error((*floc, "script"), f"script not found: {path}")
        fix = Fix("script", f"{spec.script} on {spec.on}", {}, "unlabelled", tuple(spec.leaves))
        return ScenarioFix(fix, origin, path, spec.on)
    if spec.on is not None:
        raise doc.error((*floc, "on"), "on: goes with script; ops are already per machine")
    ops: dict[Role, tuple[Op, ...]] = {}
    context = network.context()
    for role, entries in (spec.ops or {}).items():
        rloc = (*floc, "ops", role)
        if role not in ROLES:
            raise doc.error(rloc, f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        parsed: list[Op] = []
        for k, raw in enumerate(entries):
            oloc = (*rloc, k)
            if not isinstance(raw, dict):
                raise doc.error(oloc, "must be a mapping like {op: reg.set, args: {...}}")
            entry = doc.validate(OpSpecEntry, raw, base=oloc)
            op = Op(entry.op, entry.args)
            try:
                validate_op(op)
                validate_op(render_op(op, context))
            except OpError as exc:
                where = (*oloc, "op") if entry.op not in VOCABULARY else (*oloc, "args")
                raise doc.error(where, exc.message) from None
            parsed.append(op)
        if parsed:
            ops[role] = tuple(parsed)
    if not ops:
        raise doc.error((*floc, "ops"), "a fix needs at least one op")
    fix = Fix("custom", f"custom fix from {origin}", ops, "unlabelled", tuple(spec.leaves))
    return ScenarioFix(fix, origin)


def _computer_name(net: Network, role: Role) -> str:
    fqdn = net.host_name if role == "host" else net.client_name
    return re.split(r"\.", fqdn)[0].upper()[:15]
