"""The inventory provider: existing Windows machines listed in a YAML file.

``--lab-provider=inventory --lab-inventory=PATH`` (default ``inventory.yaml`` in the
rootdir). The format is in docs/real-windows.md and fixtures/inventory.example.yaml:
per role an address, a transport (winrm | ssh), a port, a username and credentials by
reference only (``password_env: VAR`` or ``keyring: service/user``; for ssh also
``key_file``, ``passphrase_env`` and ``known_hosts``). A literal ``password`` in the file
is an error naming file, line and field: secrets never live in the inventory.

Reset is the rollback journal. Every batch that changes something is written, before
anything else happens, as one JSON line to ``<journal dir>/<address>_<port>.jsonl``
(``.rdplab-journal/`` next to the inventory): the ops, their results and the inverse ops.
Registry changes are undone with ``reg.restore`` of the backup the agent made; firewall
rules, services and hosts entries go back to the machine's state gathered when the run
began. ``reset()`` applies the inverse ops in reverse order (one batch per machine) and
truncates the journal; a journal left by a crashed run is replayed the same way on the
first reset. Ops that cannot be undone (``machinekeys.corrupt``, ``cert.remove`` of a
certificate with its key, ``hotfix.install``) are named in ``reset_notes``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rdplab import yamlfile
from rdplab.backends.base import CallLog
from rdplab.catalog.base import ROLES, Role
from rdplab.errors import LabFileError, ProviderError
from rdplab.facts import Facts
from rdplab.lab import Scenario
from rdplab.ops import BatchResult, Op
from rdplab.providers.remote import RemoteBackend, RemoteProvider
from rdplab.transports.base import Transport

DEFAULT_INVENTORY = "inventory.yaml"
JOURNAL_DIR = ".rdplab-journal"
_SECRET_FIELDS = ("password", "passphrase", "secret", "key_passphrase")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MachineEntry(_Strict):
    address: str = Field(min_length=1)
    transport: Literal["winrm", "ssh"]
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str = Field(min_length=1)
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    keyring: str | None = Field(default=None, pattern=r"^[^/]+/.+$")
    # winrm
    auth: Literal["ntlm", "basic", "ssl"] | None = None
    ca_trust_path: str | None = None
    validate_server_cert: bool = True
    allow_plaintext_basic: bool = False
    # ssh
    key_file: str | None = None
    passphrase_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    known_hosts: str | None = None
    # the probe: where the host's RDP listener is reached (default: address, the lab port)
    rdp_address: str | None = None
    rdp_port: int | None = Field(default=None, ge=1, le=65535)
    websocket_port: int | None = Field(default=None, ge=1, le=65535)
    timeout: int = Field(default=30, ge=2, le=3600)


class Machines(_Strict):
    client: MachineEntry
    host: MachineEntry


class InventorySpec(_Strict):
    machines: Machines
    journal_dir: str = JOURNAL_DIR
    probe_timeout: float = Field(default=5.0, gt=0, le=120)


_WINRM_ONLY = ("auth", "ca_trust_path", "allow_plaintext_basic")
_SSH_ONLY = ("key_file", "passphrase_env", "known_hosts")


def load_inventory(path: str | Path) -> tuple[InventorySpec, yamlfile.Located]:
    """Read and check an inventory; every error names file, line and field."""
    doc = yamlfile.load(path)
    if not isinstance(doc.data, dict):
        raise LabFileError(str(doc.path), "an inventory must be a mapping with machines", 1)
    machines = doc.data.get("machines")
    if isinstance(machines, dict):
        for role, entry in machines.items():
            if not isinstance(entry, dict):
                continue
            for key in entry:
                if str(key).lower() in _SECRET_FIELDS:
                    raise doc.error(
                        ("machines", role, key),
                        "secrets never go in the inventory: name them with password_env: VAR"
                        " (an environment variable) or keyring: service/user",
                    )
    spec = doc.validate(InventorySpec)
    for role in ROLES:
        m: MachineEntry = getattr(spec.machines, role)
        loc: yamlfile.PathKey = ("machines", role)
        wrong = _SSH_ONLY if m.transport == "winrm" else _WINRM_ONLY
        for name in wrong:
            if name in doc.data["machines"][role]:
                raise doc.error((*loc, name), f"only for the other transport, not {m.transport}")
        if m.password_env and m.keyring:
            raise doc.error((*loc, "keyring"), "give password_env or keyring, not both")
        if m.transport == "winrm" and not (m.password_env or m.keyring):
            raise doc.error(loc, "WinRM needs password_env: VAR or keyring: service/user")
    return spec, doc


class InventoryProvider(RemoteProvider):
    name = "inventory"
    runs_on = "existing Windows machines from an inventory (reset: rollback journal)"

    def __init__(self, inventory: str | os.PathLike[str] = DEFAULT_INVENTORY) -> None:
        super().__init__()
        self.path = Path(inventory)
        self.spec, self._doc = load_inventory(self.path)
        self.probe_timeout = self.spec.probe_timeout
        self.journal_dir = (self.path.parent / self.spec.journal_dir).resolve()
        self.baselines: dict[Role, Facts] = {}
        self.reset_notes: list[str] = []
        self._replaying = False
        self.runs_on = (
            "existing Windows machines from "
            f"{self.path.name} (client {self.entry('client').address},"
            f" host {self.entry('host').address}; reset: rollback journal)"
        )

    def entry(self, role: Role) -> MachineEntry:
        entry: MachineEntry = getattr(self.spec.machines, role)
        return entry

    # -- credentials, by reference only ------------------------------------------------------
    def _secret(self, role: Role, env: str | None, ring: str | None, what: str) -> str | None:
        m = self.entry(role)
        who = f"{m.address} ({role})"
        if env is not None:
            value = os.environ.get(env)
            if not value:
                line = self._doc.line_of(("machines", role, f"{what}_env"))
                raise ProviderError(
                    f"{who}: the environment variable {env} is not set; it holds the {what}"
                    f" ({self.path}:{line}: machines.{role}.{what}_env)"
                )
            return value
        if ring is not None:
            service, _, user = ring.partition("/")
            try:
                import keyring
            except ImportError:
                raise ProviderError(
                    f"{who}: keyring: {ring} needs the keyring package: pip install 'rdplab[real]'"
                ) from None
            try:
                value = keyring.get_password(service, user)
            except Exception as exc:  # a keyring backend error; its text holds no secret
                raise ProviderError(
                    f"{who}: reading keyring {ring} failed ({type(exc).__name__})"
                ) from None
            if not value:
                raise ProviderError(
                    f"{who}: keyring has no {what} for service {service!r} user {user!r}"
                    f" (keyring set {service} {user})"
                )
            return str(value)
        return None

    def open_transport(self, role: Role) -> Transport:
        m = self.entry(role)
        password = self._secret(role, m.password_env, m.keyring, "password")
        if m.transport == "winrm":
            from rdplab.transports.winrm import WinRMTransport

            return WinRMTransport(
                m.address,
                m.port,
                m.username,
                password or "",
                m.auth or "ntlm",
                validate_server_cert=m.validate_server_cert,
                ca_trust_path=m.ca_trust_path,
                allow_plaintext_basic=m.allow_plaintext_basic,
                read_timeout=m.timeout,
                operation_timeout=max(1, min(m.timeout - 1, m.timeout * 2 // 3)),
            )
        from rdplab.transports.ssh import SSHTransport

        return SSHTransport(
            m.address,
            m.port or 22,
            m.username,
            password,
            str(Path(m.key_file).expanduser()) if m.key_file else None,
            m.known_hosts,
            passphrase=self._secret(role, m.passphrase_env, None, "passphrase"),
            timeout=float(m.timeout),
        )

    def rdp_endpoint(self, scenario: Scenario) -> tuple[str, int]:
        host, net = self.entry("host"), scenario.network
        if net.transport == "websocket":
            return host.rdp_address or host.address, host.websocket_port or net.target_port
        return host.rdp_address or host.address, host.rdp_port or net.port

    # -- the journal -----------------------------------------------------------------------------
    def journal_path(self, role: Role) -> Path:
        m = self.entry(role)
        port = m.port or (22 if m.transport == "ssh" else 5985)
        return self.journal_dir / f"{re.sub(r'[^A-Za-z0-9.-]', '_', m.address)}_{port}.jsonl"

    def journal(self, role: Role) -> list[dict[str, Any]]:
        path = self.journal_path(role)
        if not path.exists():
            return []
        entries = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                raise ProviderError(f"{path}:{n}: journal line is not JSON (cut short?)") from None
        return entries

    def after_apply(self, backend: RemoteBackend, ops: list[Op], result: BatchResult) -> None:
        if self._replaying or not any(r.changed for r in result.results):
            return
        role: Role = "client" if backend.role == "client" else "host"
        inverse, irreversible = inverse_ops(ops, result, self.baselines.get(role))
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": self.entry(role).address,
            "role": role,
            "phase": backend.calls.phase,
            "ops": [o.to_json() for o in ops],
            "results": [r.to_json() for r in result.results],
            "inverse": [o.to_json() for o in inverse],
            "irreversible": irreversible,
        }
        path = self.journal_path(role)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rollback(self, role: Role) -> int:
        """Apply the journal's inverse ops, newest first, in one batch; truncate it."""
        entries = self.journal(role)
        if not entries:
            return 0
        ops = [
            Op(str(o["op"]), dict(o.get("args") or {}))
            for e in reversed(entries)
            for o in e.get("inverse", [])
        ]
        for e in entries:
            for what in e.get("irreversible", []):
                self.reset_notes.append(f"{e.get('machine')}: cannot undo {what}")
        backend = self.machine(role)
        backend.calls = CallLog()  # set-up work: not part of any scenario's budget
        backend.calls.phase = "reset"
        if ops:
            self._replaying = True
            try:
                result = backend.apply(ops)
            finally:
                self._replaying = False
            if result.errors:
                bad = result.errors[0]
                raise ProviderError(
                    f"{backend.host} ({role}): rolling back the journal failed at"
                    f" {bad.op}: {bad.error}; the journal {self.journal_path(role)} is kept"
                )
        self.journal_path(role).write_text("", encoding="utf-8")
        return len(ops)

    def restore(self, scenario: Scenario) -> None:
        for role in ROLES:
            self.rollback(role)
            if role not in self.baselines:
                backend = self.machine(role)
                backend.calls = CallLog()
                backend.calls.phase = "reset"
                self.baselines[role] = backend.gather({"ports": [scenario.network.port]})


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


__all__ = ["DEFAULT_INVENTORY", "InventoryProvider", "inverse_ops", "load_inventory"]
