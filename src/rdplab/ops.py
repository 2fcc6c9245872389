"""The op vocabulary: typed operations on one Windows machine.

An op is a name plus JSON arguments. The twin (``rdplab.twin``) and the Windows agent
(``agent/agent.ps1``) implement the same vocabulary; a batch of ops is ONE remote call per
machine. Every op is declarative or guarded, so running the same batch twice reports zero
changes the second time (the idempotence step relies on it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rdplab.errors import OpError

JSON = Any

REG_TYPES = ("REG_SZ", "REG_EXPAND_SZ", "REG_DWORD", "REG_QWORD", "REG_MULTI_SZ", "REG_BINARY")


@dataclass(frozen=True)
class ArgSpec:
    name: str
    kind: type | tuple[type, ...]
    required: bool = True
    doc: str = ""


@dataclass(frozen=True)
class OpSpec:
    name: str
    doc: str
    args: tuple[ArgSpec, ...] = ()
    changes_state: bool = True


def _a(name: str, kind: type | tuple[type, ...], required: bool = True, doc: str = "") -> ArgSpec:
    return ArgSpec(name, kind, required, doc)


_RULE_MATCH_DOC = (
    "selector over firewall rules: any of name, group, direction, action, protocol, "
    "local_port, remote_port (all given keys must match)"
)

VOCABULARY: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec(
            "reg.set",
            "Set a registry value (creating the key); backed up first.",
            (
                _a("key", str),
                _a("name", str),
                _a("type", str, doc="one of " + ", ".join(REG_TYPES)),
                _a("data", (int, str, list)),
            ),
        ),
        OpSpec(
            "reg.delete",
            "Delete a value, or with no name the whole key tree; backed up first.",
            (_a("key", str), _a("name", str, required=False)),
        ),
        OpSpec(
            "reg.restore",
            "Put a key tree back exactly as a backup made by reg.set/reg.delete saw it"
            " (reg import on Windows).",
            (_a("backup", str),),
        ),
        OpSpec(
            "fw.rule.add",
            "Add a firewall rule, or bring the rule with that name to the given definition.",
            (_a("rule", dict),),
        ),
        OpSpec(
            "fw.rule.set",
            "Set enabled/action on every rule the selector matches.",
            (
                _a("match", dict, doc=_RULE_MATCH_DOC),
                _a("enabled", bool, required=False),
                _a("action", str, required=False),
            ),
        ),
        OpSpec("fw.rule.remove", "Remove every rule the selector matches.", (_a("match", dict),)),
        OpSpec("svc.start", "Start a service if it is not running.", (_a("name", str),)),
        OpSpec("svc.stop", "Stop a service if it is running.", (_a("name", str),)),
        OpSpec(
            "svc.restart",
            "Restart a service; with if_changed, only when an earlier op of the batch changed"
            " something.",
            (_a("name", str), _a("if_changed", bool, required=False)),
        ),
        OpSpec(
            "svc.config",
            "Set a service's start type (Automatic, Manual, Disabled).",
            (_a("name", str), _a("start_type", str)),
        ),
        OpSpec(
            "cert.import",
            "Import a PFX (base64; password optional) into a LocalMachine store, key readable"
            " by NETWORK SERVICE.",
            (
                _a("store", str),
                _a("pfx", str),
                _a("thumbprint", str),
                _a("password", str, required=False, doc="the PFX's password, if it has one"),
            ),
        ),
        OpSpec(
            "cert.remove",
            "Remove certificates from a LocalMachine store (with their MachineKeys files):"
            " which = unusable | all | <thumbprint>.",
            (_a("store", str), _a("which", str)),
        ),
        OpSpec(
            "machinekeys.corrupt",
            "Lab break only: overwrite the private key file of every certificate in the store.",
            (_a("store", str),),
        ),
        OpSpec(
            "dns.flush",
            "Flush the DNS client cache if it holds an entry for name that is not expect.",
            (_a("name", str), _a("expect", str)),
        ),
        OpSpec(
            "dns.cache.seed",
            "Lab break only (twin): plant a DNS cache entry. Real Windows cannot inject one.",
            (_a("name", str), _a("address", str)),
        ),
        OpSpec(
            "hosts.set",
            "Make the hosts file map name to address (one entry).",
            (_a("name", str), _a("address", str)),
        ),
        OpSpec("hosts.remove", "Remove every hosts file entry for name.", (_a("name", str),)),
        OpSpec(
            "ip.static",
            "Give the interface a static IPv4 address (DHCP off): afterwards it has exactly"
            " address/prefix (origin Manual); the default gateway becomes gateway, or stays"
            " as it was when gateway is not given. No change when already so.",
            (
                _a("alias", str, doc="the interface (Windows InterfaceAlias), e.g. Ethernet"),
                _a("address", str, doc="IPv4 address in dotted quads"),
                _a("prefix", int, doc="prefix length, 1 to 32 (24 = 255.255.255.0)"),
                _a("gateway", str, required=False, doc="default gateway, inside the subnet"),
            ),
        ),
        OpSpec(
            "ip.dhcp.lease",
            "Lab break only: the interface's DHCP lease moved to address (DHCP stays on)."
            " Real Windows cannot choose its lease: the DHCP server moves it.",
            (_a("alias", str), _a("address", str)),
        ),
        OpSpec(
            "hotfix.install",
            "Install an update package (.msu) when the KB is not installed.",
            (_a("kb", str), _a("source", str, required=False)),
        ),
        OpSpec(
            "licensing.clear",
            "Back up and delete HKLM\\SOFTWARE\\Microsoft\\MSLicensing when its structure is"
            " invalid; no change when healthy or absent.",
        ),
    )
}


@dataclass(frozen=True)
class Op:
    """One operation for one machine."""

    name: str
    args: Mapping[str, JSON] = field(default_factory=dict)

    def to_json(self) -> dict[str, JSON]:
        return {"op": self.name, "args": dict(self.args)}

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.args.items() if k != "pfx")
        return f"{self.name}({inner})"


def validate_op(op: Op) -> None:
    """Raise OpError unless op names a known op with well-typed arguments."""
    spec = VOCABULARY.get(op.name)
    if spec is None:
        raise OpError(f"unknown op {op.name!r} (known: {', '.join(sorted(VOCABULARY))})")
    check_args(op, spec)
    if op.name == "reg.set" and op.args["type"] not in REG_TYPES:
        raise OpError(f"op reg.set: type {op.args['type']!r} is not one of {REG_TYPES}")


def check_args(op: Op, spec: OpSpec) -> None:
    """Raise OpError unless ``op``'s arguments are exactly the spec's, well typed (shared by
    the Windows and the router vocabularies)."""
    known = {a.name for a in spec.args}
    for extra in set(op.args) - known:
        raise OpError(f"op {op.name}: unexpected argument {extra!r}")
    for arg in spec.args:
        if arg.name not in op.args:
            if arg.required:
                raise OpError(f"op {op.name}: missing argument {arg.name!r}")
            continue
        value = op.args[arg.name]
        if isinstance(value, bool) and arg.kind is not bool:
            raise OpError(f"op {op.name}: argument {arg.name!r} must not be a boolean")
        if not isinstance(value, arg.kind):
            raise OpError(f"op {op.name}: argument {arg.name!r} has type {type(value).__name__}")


_PLACEHOLDER = re.compile(r"\{([a-z_]+(?:\.[a-z_]+)*)\}")


def render(value: JSON, context: Mapping[str, JSON]) -> JSON:
    """Fill ``{host.name}``-style placeholders in op arguments from the lab context.

    A string that is exactly one placeholder takes the context value with its type
    (``"{port}"`` becomes the integer 3389)."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            if whole.group(1) not in context:
                raise OpError(f"op argument {value!r}: no lab value for {value}")
            return context[whole.group(1)]

        def sub(m: re.Match[str]) -> str:
            key = m.group(1)
            if key not in context:
                raise OpError(f"op argument {value!r}: no lab value for {{{key}}}")
            return str(context[key])

        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    return value


def render_op(op: Op, context: Mapping[str, JSON]) -> Op:
    return Op(op.name, render(dict(op.args), context))


@dataclass
class OpResult:
    """What one op did on one machine."""

    op: str
    changed: bool
    detail: str = ""
    backup: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, JSON]:
        return {
            "op": self.op,
            "changed": self.changed,
            "detail": self.detail,
            "backup": self.backup,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> OpResult:
        return cls(
            op=str(data["op"]),
            changed=bool(data["changed"]),
            detail=str(data.get("detail") or ""),
            backup=data.get("backup"),
            error=data.get("error"),
        )


@dataclass
class BatchResult:
    """The answer to one batch: per-op results, in order."""

    results: list[OpResult]

    @property
    def changes(self) -> int:
        return sum(1 for r in self.results if r.changed)

    @property
    def errors(self) -> list[OpResult]:
        return [r for r in self.results if r.error]
