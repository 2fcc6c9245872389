"""The inventory provider: existing Windows machines listed in a YAML file.

``--lab-provider=inventory --lab-inventory=PATH`` (default ``inventory.yaml`` in the
rootdir). The format is in docs/real-windows.md and fixtures/inventory.example.yaml:
per role an address, a transport (winrm | ssh), a port, a username and credentials by
reference only (``password_env: VAR`` or ``keyring: service/user``; for ssh also
``key_file``, ``passphrase_env`` and ``known_hosts``). A literal ``password`` in the file
is an error naming file, line and field: secrets never live in the inventory.

An optional ``router`` entry is the lab's router, a Linux gateway over SSH
(``rdplab.backends.router_ssh``): address, port, username, credentials as above,
``known_hosts``, ``lan_interface`` / ``outside_interface`` (where its addresses are read),
``client_link`` (the interface toward the remote client) and ``sudo``. Scenarios whose lab
has a router need it. The router is reset by bringing rdplab's rules back to its baseline,
its snapshot the first time it is reset, kept in
``<journal dir>/router_<address>_<port>.baseline.json`` (delete the file to take a new one).

Reset is the rollback journal (``rdplab.providers.journal``). Every batch is written
before it is sent, with an inverse planned from the facts, and completed when it answers,
as one JSON line in ``<journal dir>/<address>_<port>.jsonl`` (``.rdplab-journal/`` next
to the inventory): the ops, their results and the inverse ops.
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
import socket
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rdplab import yamlfile
from rdplab.backends.base import CallLog
from rdplab.backends.router_ssh import SSHRouterBackend
from rdplab.catalog.base import ROLES, Role
from rdplab.errors import LabFileError, ProviderError
from rdplab.facts import Facts
from rdplab.lab import Scenario
from rdplab.ops import BatchResult, Op
from rdplab.providers.journal import Journal, inverse_ops, planned_inverse
from rdplab.providers.pool import Lease, lease, load_pool
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


_IFNAME = r"^[A-Za-z0-9_.:@-]{1,15}$"


class RouterEntry(_Strict):
    """``machines.router``: the lab's router, a Linux gateway with nftables, over SSH."""

    address: str = Field(min_length=1)
    transport: Literal["ssh"] = "ssh"
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str = Field(min_length=1)
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    keyring: str | None = Field(default=None, pattern=r"^[^/]+/.+$")
    key_file: str | None = None
    passphrase_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    known_hosts: str | None = None
    #: where the facts read the router's LAN and outside addresses (default: the lab file's)
    lan_interface: str | None = Field(default=None, pattern=_IFNAME)
    outside_interface: str | None = Field(default=None, pattern=_IFNAME)
    #: the interface toward the remote client: link.mtu, the facts' link_mtu
    client_link: str = Field(default="wg0", pattern=_IFNAME)
    #: run rdplab's scripts through ``sudo -n`` (a user with passwordless sudo)
    sudo: bool = False
    timeout: int = Field(default=30, ge=2, le=3600)


class Machines(_Strict):
    client: MachineEntry
    host: MachineEntry
    router: RouterEntry | None = None


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
    router = spec.machines.router
    if router is not None and router.password_env and router.keyring:
        raise doc.error(("machines", "router", "keyring"), "give password_env or keyring, not both")
    return spec, doc


class InventoryProvider(RemoteProvider):
    name = "inventory"
    runs_on = "existing Windows machines from an inventory (reset: rollback journal)"

    def __init__(
        self,
        inventory: str | os.PathLike[str] = DEFAULT_INVENTORY,
        pool: str | os.PathLike[str] | None = None,
    ) -> None:
        """``pool``: lease one lab of a pool file for this provider's life (one lab per
        pytest-xdist worker; rdplab.providers.pool) instead of using ``inventory``."""
        super().__init__()
        self.lease: Lease | None = None
        if pool is not None:
            self.lease = lease(load_pool(pool), progress=_to_stderr)
            inventory = self.lease.inventory
        self.path = Path(inventory)
        try:
            self.spec, self._doc = load_inventory(self.path)
        except BaseException:
            self.close()
            raise
        self.probe_timeout = self.spec.probe_timeout
        self.journal_dir = (self.path.parent / self.spec.journal_dir).resolve()
        self.baselines: dict[Role, Facts] = {}
        self.reset_notes: list[str] = []
        self._replaying = False
        self._pending: dict[Role, str] = {}
        #: the tag of the ``rdplab fix`` in progress: its journal entries carry it
        self.fix_tag: str | None = None
        router = self.spec.machines.router
        self.runs_on = (
            "existing Windows machines from "
            f"{self.path.name} (client {self.entry('client').address},"
            f" host {self.entry('host').address}"
            + (f", router {router.address} (Linux, SSH)" if router is not None else "")
            + "; reset: rollback journal)"
        )

    def entry(self, role: Role) -> MachineEntry:
        entry: MachineEntry = getattr(self.spec.machines, role)
        return entry

    def router_entry(self) -> RouterEntry | None:
        return self.spec.machines.router

    # -- credentials, by reference only ------------------------------------------------------
    def _secret(self, role: Role, env: str | None, ring: str | None, what: str) -> str | None:
        m = self.router_entry() if role == "router" else self.entry(role)
        assert m is not None
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

    def preflight(self) -> None:
        """Every credential the run will need is there, and each machine's WinRM or SSH
        port accepts a TCP connection (nothing is sent; no credential leaves)."""
        roles: tuple[Role, ...] = (*ROLES, "router") if self.router_entry() else ROLES
        for role in roles:
            self.check_credentials(role)
        for role in roles:
            self.check_port(role)

    def check_credentials(self, role: Role) -> None:
        """The secrets the machine needs are where the inventory says (ProviderError)."""
        m = self.router_entry() if role == "router" else self.entry(role)
        assert m is not None
        self._secret(role, m.password_env, m.keyring, "password")
        self._secret(role, m.passphrase_env, None, "passphrase")

    def transport_port(self, role: Role) -> int:
        m = self.router_entry() if role == "router" else self.entry(role)
        assert m is not None
        return m.port or (22 if m.transport == "ssh" else 5985)

    def check_port(self, role: Role) -> None:
        """The machine's WinRM or SSH port accepts a TCP connection (ProviderError)."""
        m = self.router_entry() if role == "router" else self.entry(role)
        assert m is not None
        port = self.transport_port(role)
        try:
            socket.create_connection((m.address, port), timeout=min(5, m.timeout)).close()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ProviderError(
                f"{m.address}:{port} ({role}): cannot connect for {m.transport}: {reason}"
                f" ({self.path})"
            ) from None

    def close(self) -> None:
        super().close()
        if self.lease is not None:
            self.lease.release()
            self.lease = None

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

    # -- the router --------------------------------------------------------------------------
    def open_router(self) -> SSHRouterBackend | None:
        r = self.router_entry()
        if r is None:
            return None
        from rdplab.transports.ssh import SSHTransport

        transport = SSHTransport(
            r.address,
            r.port or 22,
            r.username,
            self._secret("router", r.password_env, r.keyring, "password"),
            str(Path(r.key_file).expanduser()) if r.key_file else None,
            r.known_hosts,
            passphrase=self._secret("router", r.passphrase_env, None, "passphrase"),
            timeout=float(r.timeout),
        )
        return SSHRouterBackend(
            transport,
            CallLog(),
            client_link=r.client_link,
            lan_interface=r.lan_interface,
            outside_interface=r.outside_interface,
            sudo=r.sudo,
        )

    def no_router(self, scenario: Scenario) -> str:
        return (
            f"{self.path}: machines.router is missing: scenario {scenario.id} has a router"
            " (network.router in its lab file); add a router entry with address, username,"
            " key_file or password_env, and known_hosts (docs/real-windows.md)"
        )

    def router_baseline_path(self) -> Path:
        r = self.router_entry()
        assert r is not None
        name = re.sub(r"[^A-Za-z0-9.-]", "_", r.address)
        return self.journal_dir / f"router_{name}_{r.port or 22}.baseline.json"

    def router_baseline(self, router: SSHRouterBackend) -> dict[str, Any]:
        """The router as it was the first time rdplab reset it, kept next to the journal
        (a crashed run's leftovers are undone by the next run); delete the file to take a
        new baseline."""
        if self.router_base is not None:
            return self.router_base
        path = self.router_baseline_path()
        base: dict[str, Any]
        if path.exists():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ProviderError(
                    f"{path}: cannot read the router's baseline ({type(exc).__name__});"
                    " delete it to take a new one"
                ) from None
            if not isinstance(loaded, dict) or not isinstance(loaded.get("forwards"), dict):
                raise ProviderError(
                    f"{path}: not a router baseline (no forwards); delete it to take a new one"
                )
            base = loaded
        else:
            base = router.snapshot()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(base, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        self.router_base = base
        return base

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
        return Journal(self.journal_path(role)).entries()

    def before_apply(self, backend: RemoteBackend, ops: list[Op]) -> None:
        """Write-ahead: the batch and its planned inverse go to the journal before the batch
        is sent (rdplab.providers.journal)."""
        if self._replaying:
            return
        role = _role(backend)
        inverse, irreversible = planned_inverse(ops, self.baselines.get(role))
        batch = uuid.uuid4().hex
        self._pending[role] = batch
        Journal(self.journal_path(role)).append(
            self._entry(backend, ops, inverse, irreversible, batch=batch, pending=True)
        )

    def after_apply(self, backend: RemoteBackend, ops: list[Op], result: BatchResult) -> None:
        """The batch answered: its entry is completed (with the agent's registry backups),
        or dropped when nothing changed."""
        if self._replaying:
            return
        role = _role(backend)
        batch = self._pending.pop(role, None)
        journal = Journal(self.journal_path(role))
        if not any(r.changed for r in result.results):
            journal.rewrite(lambda e: None if e.get("batch") == batch else e)
            return
        inverse, irreversible = inverse_ops(ops, result, self.baselines.get(role))
        done = self._entry(backend, ops, inverse, irreversible, batch=batch)
        done["results"] = [r.to_json() for r in result.results]
        journal.rewrite(lambda e: done if e.get("batch") == batch else e)

    def _entry(
        self,
        backend: RemoteBackend,
        ops: list[Op],
        inverse: list[Op],
        irreversible: list[str],
        **extra: Any,
    ) -> dict[str, Any]:
        role = _role(backend)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": self.entry(role).address,
            "role": role,
            "phase": backend.calls.phase,
            "ops": [o.to_json() for o in ops],
            "inverse": [o.to_json() for o in inverse],
            "irreversible": irreversible,
            **extra,
        }
        if self.fix_tag is not None:
            entry["fix"] = self.fix_tag
        return entry

    def rollback(self, role: Role, fix: str | None = None) -> int:
        """Apply the journal's inverse ops (only those of ``fix``, when given), newest
        first, in one batch; then drop those entries (truncate the journal when all)."""
        journal = Journal(self.journal_path(role))
        entries = [e for e in journal.entries() if fix is None or e.get("fix") == fix]
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
        backend.calls.phase = "reset" if fix is None else "rollback"
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
        if fix is None:
            self.journal_path(role).write_text("", encoding="utf-8")
        else:
            journal.rewrite(lambda e: None if e.get("fix") == fix else e)
        return len(ops)

    # -- fixes made by `rdplab fix`, undone by `rdplab rollback` -----------------------------------
    def begin_fix(self, before: dict[Role, Facts]) -> str:
        """Tag the journal entries of the batches to come as one fix, whose inverses are
        planned from ``before`` (the facts the diagnosis gathered)."""
        self.baselines.update(before)
        self.fix_tag = f"fix-{time.time_ns()}"
        return self.fix_tag

    def end_fix(self) -> None:
        """Mark the fix finished in the journals it wrote to."""
        tag, self.fix_tag = self.fix_tag, None
        for role in ROLES:
            journal = Journal(self.journal_path(role))
            if any(e.get("fix") == tag for e in journal.entries()):
                journal.append(
                    {"fix": tag, "done": True, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                )

    def fixes(self) -> list[tuple[str, bool]]:
        """(tag, finished) of every fix still in the journals, oldest first."""
        seen: dict[str, bool] = {}
        for role in ROLES:
            for e in self.journal(role):
                tag = e.get("fix")
                if isinstance(tag, str):
                    seen[tag] = seen.get(tag, False) or bool(e.get("done"))
        return sorted(seen.items(), key=lambda t: int(t[0].split("-")[-1]))

    def settle(self, scenario: Scenario, clean: Iterable[Role]) -> None:
        """A machine left at its baseline has nothing to undo: its journal is emptied, so
        the next reset that does restore it does not replay finished scenarios."""
        super().settle(scenario, clean)
        for role in self.clean:
            path = self.journal_path(role)
            if path.exists():
                path.write_text("", encoding="utf-8")

    def restore(self, scenario: Scenario, roles: tuple[Role, ...] = ROLES) -> None:
        for role in ROLES:
            if role in roles:
                self.rollback(role)
            if role not in self.baselines:
                backend = self.machine(role)
                backend.calls = CallLog()
                backend.calls.phase = "reset"
                self.baselines[role] = backend.gather({"ports": [scenario.network.port]})


def _role(backend: RemoteBackend) -> Role:
    return "client" if backend.role == "client" else "host"


def _to_stderr(line: str) -> None:
    print(line, file=sys.__stderr__, flush=True)


__all__ = ["DEFAULT_INVENTORY", "InventoryProvider", "inverse_ops", "load_inventory"]
