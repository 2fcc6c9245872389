"""The rollback journal of real machines: one JSON line per batch, per machine, written
before the batch is sent and completed after it (``Journal``), and the ops that undo a
batch (``inverse_ops``, ``planned_inverse``).

Write-ahead: before a batch goes out, its entry is appended (and fsynced) with the inverse
*planned* from the facts gathered before (registry values as the facts showed them,
firewall rules, services, hosts entries); every planned inverse op is declarative, so
replaying it is right whether the batch ran wholly, partly or not at all. When the batch
has answered, the entry is replaced by the *completed* one, whose registry inverses are
``reg.restore`` of the backups the agent made, or dropped when nothing changed. An entry
still pending on the next run is a batch whose answer never came: its planned inverse is
replayed.

Entries may carry a ``fix`` tag (``rdplab fix``); a marker line ``{"fix": tag, "done":
true}`` says that fix finished. ``rdplab rollback`` undoes the entries of the last tag.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rdplab import windows as win
from rdplab.errors import ProviderError
from rdplab.facts import Facts
from rdplab.ops import BatchResult, Op, OpResult

REGISTRY_OPS = ("reg.set", "reg.delete", "licensing.clear")

Entry = dict[str, Any]


class Journal:
    """One machine's journal file (JSON lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[Entry]:
        if not self.path.exists():
            return []
        out = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise ProviderError(
                    f"{self.path}:{n}: journal line is not JSON (cut short?)"
                ) from None
        return out

    def append(self, entry: Entry) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rewrite(self, keep: Callable[[Entry], Entry | None]) -> None:
        """Replace every entry by ``keep(entry)`` (None drops it), atomically."""
        lines = [json.dumps(e) for e in (keep(x) for x in self.entries()) if e is not None]
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def remove(self, drop: Iterable[Entry]) -> None:
        gone = [json.dumps(e, sort_keys=True) for e in drop]
        self.rewrite(lambda e: None if json.dumps(e, sort_keys=True) in gone else e)


def planned_inverse(ops: list[Op], baseline: Facts | None) -> tuple[list[Op], list[str]]:
    """The inverse of a batch planned before it runs, as if every op changed something,
    from the machine's facts gathered before (``baseline``)."""
    return inverse_ops(ops, BatchResult([OpResult(o.name, True) for o in ops]), baseline)


def inverse_ops(
    ops: list[Op], result: BatchResult, baseline: Facts | None
) -> tuple[list[Op], list[str]]:
    """The ops that undo a batch's changes (newest first), and what cannot be undone."""
    inverse: list[Op] = []
    irreversible: list[str] = []
    for op, res in reversed(list(zip(ops, result.results, strict=False))):
        if not res.changed:
            continue
        a = op.args
        if res.backup:  # reg.set, reg.delete, licensing.clear: the agent's own backup
            inverse.append(Op("reg.restore", {"backup": res.backup}))
        elif op.name in REGISTRY_OPS and baseline is not None:
            # planned before the batch (no backup exists yet): the values the facts showed
            undo = _registry_inverse(op, baseline)
            if undo is None:
                irreversible.append(str(op))
            else:
                inverse.extend(undo)
        elif op.name in ("svc.restart", "dns.flush"):
            continue  # nothing lasting to undo (a restart's new certificate is reported)
        elif op.name == "dns.cache.seed":
            inverse.append(Op("dns.flush", {"name": a["name"], "expect": ""}))
        elif baseline is None or op.name in ("machinekeys.corrupt", "hotfix.install"):
            irreversible.append(str(op))
        elif op.name in ("fw.rule.add", "fw.rule.set", "fw.rule.remove"):
            inverse.extend(_firewall_inverse(op, baseline))
        elif op.name in ("svc.start", "svc.stop", "svc.config"):
            svc = baseline.service(a["name"])
            if svc is None:
                irreversible.append(str(op))
                continue
            inverse.append(Op("svc.config", {"name": a["name"], "start_type": svc["start_type"]}))
            running = str(svc["status"]).lower() == "running"
            inverse.append(Op("svc.start" if running else "svc.stop", {"name": a["name"]}))
        elif op.name in ("hosts.set", "hosts.remove"):
            was = baseline.hosts.get(a["name"].lower())
            inverse.append(
                Op("hosts.set", {"name": a["name"], "address": was})
                if was
                else Op("hosts.remove", {"name": a["name"]})
            )
        elif op.name == "cert.import":
            present = any(
                str(c.get("thumbprint", "")).upper() == str(a["thumbprint"]).upper()
                for c in baseline.certificates(a["store"])
            )
            if not present:
                inverse.append(Op("cert.remove", {"store": a["store"], "which": a["thumbprint"]}))
        else:  # cert.remove (the private key cannot come back), anything new
            irreversible.append(str(op))
    return inverse, irreversible


def _firewall_inverse(op: Op, baseline: Facts) -> list[Op]:
    a = op.args
    if op.name == "fw.rule.add":
        name = str(a["rule"].get("name", ""))
        before = baseline.fw_rules(name=name)
        if before:
            return [Op("fw.rule.add", {"rule": r.to_json()}) for r in before]
        return [Op("fw.rule.remove", {"match": {"name": name}})]
    before = baseline.fw_rules(**a["match"])
    if op.name == "fw.rule.remove":
        return [Op("fw.rule.add", {"rule": r.to_json()}) for r in before]
    return [
        Op("fw.rule.set", {"match": {"name": r.name}, "enabled": r.enabled, "action": r.action})
        for r in before
    ]


def _covered(key: str) -> bool:
    """Whether the facts show ``key`` whole (it lies in a tree the gather reads)."""
    low = key.lower()
    return any(low == w.lower() or low.startswith(w.lower() + "\\") for w in win.WATCHED_KEYS)


def _registry_inverse(op: Op, baseline: Facts) -> list[Op] | None:
    """Declarative ops that put what ``op`` may touch back as the facts showed it; None
    where the facts do not show it (a key outside the gathered trees)."""
    key = str(op.args.get("key") or win.MSLICENSING_KEY)
    if not _covered(key):
        return None
    trees = {k.lower(): (k, body) for k, body in baseline.raw["registry"].items()}
    if op.name == "reg.set" or (op.name == "reg.delete" and op.args.get("name")):
        name = str(op.args["name"])
        if key.lower() not in trees:  # the key itself is new: remove its highest new parent
            top = key
            while (
                "\\" in top
                and top.rsplit("\\", 1)[0].lower() not in trees
                and _covered(top.rsplit("\\", 1)[0])
            ):
                top = top.rsplit("\\", 1)[0]
            return [Op("reg.delete", {"key": top})]
        values = trees[key.lower()][1].get("values") or {}
        for vname, v in values.items():
            if vname.lower() == name.lower():
                return [
                    Op("reg.set", {"key": key, "name": vname, "type": v["type"], "data": v["data"]})
                ]
        return [Op("reg.delete", {"key": key, "name": name})]
    # a whole tree deleted (reg.delete without a name, licensing.clear): every value back
    low = key.lower()
    return [
        Op("reg.set", {"key": path, "name": vname, "type": v["type"], "data": v["data"]})
        for k, (path, body) in sorted(trees.items())
        if k == low or k.startswith(low + "\\")
        for vname, v in (body.get("values") or {}).items()
    ]


__all__ = ["Journal", "inverse_ops", "planned_inverse"]
