"""Composing the ops of several faults (or fixes) into one batch per machine.

A scenario with two causes on one machine gets ONE break batch and ONE fix batch there,
made of the ops each fault (or fix) declares. Where those ops touch the same thing, simple
concatenation can stop the run: one fault disables TermService, the next restarts it to
make the service meet a bad key, and the restart fails on a disabled service. The rule is
decided here, once, for every fault; fault modules hold no special cases for each other.

**The composition rule.** Service ops state what a fault wants of a service; the other ops
change state the service reads when it starts. So a composed batch is, per machine:

1. every ``svc.config`` (start types) first, in the order declared;
2. every other op (registry, firewall, certificates, DNS, ...) in the order declared,
   fault after fault;
3. then, per service (in the order the services first appear), its run state once:
   - a service some fault keeps stopped (``svc.stop``), or whose composed start type is
     ``Disabled``, ends stopped: its ``svc.start``/``svc.restart`` are dropped, because its
     next start (the fix that re-enables it) meets every change made before it;
   - otherwise ``svc.start`` if any fault starts it, then one ``svc.restart`` if any fault
     restarts it (``if_changed`` only when every restart declared it: a restart that was
     unconditional stays unconditional).

Moving restarts last keeps what ``svc.restart if_changed`` means ("only when an earlier op
of the batch changed something"): more ops come before it, never fewer. A fix that restarts
TermService therefore runs after the fix that re-enables it, and a break that restarts it
never starts a service another fault keeps disabled.

**Conflicts.** Two faults that want different end states of the same thing cannot both be
in place: different data for one registry value (or a set and a delete of it), different
start types for one service, a start and a stop of one service, ``enabled`` or ``action``
set both ways on one firewall selector. ``conflicts`` names them; the lab file loader
rejects such a scenario with the usual file/line/field error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rdplab.ops import Op

SERVICE_OPS = ("svc.start", "svc.stop", "svc.restart")


@dataclass(frozen=True)
class Part:
    """One contributor's ops for one machine: ``who`` names it in conflict messages (a
    fault label such as ``termservice-stopped@host``, or a fix id)."""

    who: str
    ops: tuple[Op, ...]


def compose(parts: Sequence[Part]) -> list[Op]:
    """One batch from several contributors' ops, by the rule above."""
    config: list[Op] = []
    state: list[Op] = []
    services: dict[str, dict[str, list[Op]]] = {}
    for part in parts:
        for o in part.ops:
            if o.name == "svc.config":
                config.append(o)
            elif o.name in SERVICE_OPS:
                name = str(o.args["name"]).lower()
                services.setdefault(name, {}).setdefault(o.name, []).append(o)
            else:
                state.append(o)
    start_types = {str(o.args["name"]).lower(): str(o.args["start_type"]) for o in config}
    tail: list[Op] = []
    for name, ops in services.items():
        stops = ops.get("svc.stop", [])
        if stops or start_types.get(name) == "Disabled":
            tail.extend(stops[:1])
            continue
        tail.extend(ops.get("svc.start", [])[:1])
        restarts = ops.get("svc.restart", [])
        if restarts:
            args = dict(restarts[0].args)
            if all(r.args.get("if_changed") for r in restarts):
                args["if_changed"] = True
            else:
                args.pop("if_changed", None)
            tail.append(Op("svc.restart", args))
    return _dedupe(config) + state + tail


def _dedupe(ops: Iterable[Op]) -> list[Op]:
    out: list[Op] = []
    for o in ops:
        if o not in out:
            out.append(o)
    return out


def _target(o: Op) -> tuple[str, ...] | None:
    """What end state an op declares, as a key two ops can share (None: not compared)."""
    a = o.args
    if o.name in ("reg.set", "reg.delete") and "name" in a:
        return ("reg", str(a["key"]).lower(), str(a.get("name", "")).lower())
    if o.name == "svc.config":
        return ("svc.config", str(a["name"]).lower())
    if o.name in ("svc.start", "svc.stop"):
        return ("svc.run", str(a["name"]).lower())
    if o.name == "fw.rule.set":
        return ("fw", repr(sorted(dict(a["match"]).items())))
    if o.name in ("hosts.set", "hosts.remove"):
        return ("hosts", str(a["name"]).lower())
    if o.name in ("ip.static", "ip.dhcp.lease"):
        return ("ip", str(a["alias"]).lower())
    if o.name in ("fwd.set", "fwd.remove"):
        return ("fwd", str(a["port"]))
    if o.name in ("icmp.frag", "link.mtu"):
        return (o.name,)
    return None


def _wanted(o: Op) -> object:
    a = o.args
    if o.name == "reg.set":
        return ("set", a["type"], str(a["data"]).lower())
    if o.name == "reg.delete":
        return ("delete",)
    if o.name == "svc.config":
        return a["start_type"]
    if o.name in ("svc.start", "svc.stop"):
        return o.name
    if o.name == "fw.rule.set":
        return (a.get("enabled"), a.get("action"))
    if o.name == "hosts.set":
        return ("set", a["address"])
    if o.name in ("ip.static", "ip.dhcp.lease", "fwd.set"):
        return (o.name, a.get("address", a.get("to")), a.get("to_port"))
    if o.name == "icmp.frag":
        return a["allow"]
    if o.name == "link.mtu":
        return a["mtu"]
    return ("remove",)


def conflicts(parts: Sequence[Part]) -> list[str]:
    """Pairs of contributors that want different end states of one thing, as sentences."""
    seen: dict[tuple[str, ...], tuple[str, object, Op]] = {}
    out: list[str] = []
    for part in parts:
        for o in part.ops:
            target = _target(o)
            if target is None:
                continue
            wanted = _wanted(o)
            if target in seen:
                who, other, first = seen[target]
                if who != part.who and other != wanted:
                    out.append(f"{part.who} ({o}) conflicts with {who} ({first})")
                continue
            seen[target] = (part.who, wanted, o)
    return out
