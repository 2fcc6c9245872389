"""The twin: one simulated Windows machine, composed of its subsystems.

``apply`` runs an op batch (one call, like agent.ps1) and ``gather`` returns the same facts
document the agent returns. A batch that fails half-way is rolled back to the exact state
before the batch, and the result says so.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from rdplab import mslicensing, policy
from rdplab import windows as win
from rdplab.errors import OpError, RdplabError
from rdplab.ops import BatchResult, Op, OpResult, validate_op
from rdplab.twin.certs import RD_STORE, CertEntry, CertStores, make_self_signed, thumbprint
from rdplab.twin.dns import DnsClient
from rdplab.twin.events import EventLog
from rdplab.twin.firewall import Firewall, port_matches
from rdplab.twin.ip import IpConfig, wants_ip
from rdplab.twin.registry import Registry, check_value, normalize_key
from rdplab.twin.services import Services

# (twin, address) -> whether an HTTP endpoint answers there; set by the sim network.
HttpReach = Callable[[str], bool]


def _nothing_answers(address: str) -> bool:
    """A twin off any network: no HTTP server answers (a module function: twins pickle)."""
    return False


@dataclass
class Computer:
    name: str
    os_caption: str
    os_build: str  # e.g. 10.0.20348.1
    kind: str  # client | server


@dataclass
class Twin:
    computer: Computer
    registry: Registry
    firewall: Firewall
    services: Services
    certs: CertStores
    dns: DnsClient
    hotfixes: list[str]
    tspkg_version: str
    journal: list[dict[str, Any]] = field(default_factory=list)
    zone: Mapping[str, str] = field(default_factory=dict)  # the lab's DNS server
    http_reach: HttpReach = field(default=_nothing_answers)
    events: EventLog = field(default_factory=EventLog)  # the System log; never rolled back
    # IPv4 interfaces; none unless set (providers.sim.scenario_twin gives each lab twin one)
    ip: IpConfig = field(default_factory=IpConfig)

    # -- helpers ----------------------------------------------------------------------------
    def lookup(self, key: str, name: str) -> Any:
        value = self.registry.get(key, name)
        return None if value is None else value.data

    @property
    def name(self) -> str:
        return self.computer.name

    def address(self) -> str | None:
        """The machine's IPv4 address: the first address of its first interface (None
        when the twin has no interface or that interface no address)."""
        return self.ip.address()

    def listening(self) -> dict[int, str]:
        """Ports the Remote Desktop listeners answer on, with what listens."""
        if not self.services.running(win.TERMSERVICE):
            return {}
        if policy.deny_ts_connections(self.lookup).value != 0:
            return {}
        ports = {policy.listener_port(self.lookup): "RDP-Tcp"}
        for p in win.WEBSOCKET_PORTS:
            ports[p] = "RDP WebSocket"
        return ports

    def tls_certificate(self) -> tuple[dict[str, Any] | None, str]:
        """The certificate the listener presents, or None with the reason."""
        bound = self.lookup(win.RDP_TCP_KEY, "SSLCertificateSHA1Hash")
        if bound is not None:
            entry = self.certs.find(bytes.fromhex(bound).hex().upper())
            if entry is None:
                return None, f"SSLCertificateSHA1Hash names {bound.upper()}, which no store holds"
            if not self.certs.usable(entry):
                self._tls_key_failed(entry)
                return None, f"bound certificate's private key is {self.certs.key_status(entry)}"
            return entry.describe(), "bound by SSLCertificateSHA1Hash"
        entries = self.certs.entries(RD_STORE)
        if not entries:
            return None, "no certificate in the 'Remote Desktop' store"
        for e in entries:
            if self.certs.usable(e):
                return e.describe(), "self-signed certificate from the 'Remote Desktop' store"
        e = entries[0]
        self._tls_key_failed(e)
        return None, (
            f"certificate {thumbprint(e.cert)} in 'Remote Desktop' is unusable:"
            f" private key {self.certs.key_status(e)} in MachineKeys ({e.key_file})"
        )

    def _tls_key_failed(self, entry: CertEntry) -> None:
        """A handshake that cannot use the certificate's private key: Schannel 36870."""
        if self.certs.key_status(entry) == "ok":
            return  # expired, not a key problem: no 36870
        self.events.write(
            win.SCHANNEL_PROVIDER,
            win.EVENT_TLS_KEY_ACCESS_FAILED,
            "A fatal error occurred when attempting to access the TLS server credential"
            f" private key. The error code returned from the cryptographic module is"
            f" 0x{win.SEC_E_UNKNOWN_CREDENTIALS:08X}. The internal error state is 10001.",
        )

    def _termservice_started(self) -> str:
        """TermService start: make a fresh self-signed certificate when none is there.

        An expired one is replaced; one whose key is corrupt or missing is left in place
        (TermService logs an error and TLS fails) until someone deletes it.
        """
        entries = self.certs.entries(RD_STORE)
        if any(self.certs.usable(e) for e in entries):
            return ""
        if any(self.certs.key_status(e) != "ok" for e in entries):
            # Windows documents the status "Keyset does not exist" for this event; which
            # status a corrupt (rather than missing) key file gives is not documented.
            self.events.write(
                win.RCM_PROVIDER,
                win.EVENT_CERT_CREATE_FAILED,
                "The RD Session Host Server has failed to create a new self signed certificate"
                " to be used for RD Session Host Server authentication on TLS connections. The"
                " relevant status code was Keyset does not exist.",
            )
            return "existing certificate kept: its private key is unusable (event 1057)"
        self.certs.remove(RD_STORE, "all")
        self.certs.add(RD_STORE, make_self_signed(self.computer.name))
        return "created a new self-signed certificate in 'Remote Desktop'"

    def run_client(self) -> str:
        """What an elevated mstsc run does to client state: recreate MSLicensing if absent."""
        if self.registry.key(win.MSLICENSING_KEY) is not None:
            return ""
        hwid = os.urandom(mslicensing.HWID_BYTES).hex()
        self.registry.set(win.MSLICENSING_KEY + r"\HardwareID", "ClientHWID", "REG_BINARY", hwid)
        self.registry.create_key(win.MSLICENSING_KEY + r"\Store\LICENSE000")
        return "MSLicensing recreated by the elevated client run"

    # -- ops ------------------------------------------------------------------------------------
    def apply(self, ops: list[Op]) -> BatchResult:
        """Run a batch. On the first error, roll the whole machine back and stop."""
        for op in ops:
            validate_op(op)
        saved = self._save()
        results: list[OpResult] = []
        for op in ops:
            try:
                results.append(self._apply_one(op, any(r.changed for r in results)))
            except Exception as exc:  # any failure: the machine goes back as it was
                self._load(saved)
                message = (
                    exc.message if isinstance(exc, RdplabError) else f"{type(exc).__name__}: {exc}"
                )
                results.append(OpResult(op.name, False, "rolled back the batch", error=message))
                for r in results[:-1]:
                    r.changed = False
                    r.detail += " (rolled back)"
                break
        return BatchResult(results)

    def _save(self) -> dict[str, Any]:
        return clone({k: getattr(self, k) for k in _STATE})

    def _load(self, saved: dict[str, Any]) -> None:
        for k, v in saved.items():
            setattr(self, k, v)

    def _backup(self, key: str, name: str | None = None) -> str:
        """Journal what a change is about to touch: one value (``name`` given; a restore puts
        back that value only, so values Windows writes at run time in the same key are left
        alone) or the whole key tree (a key deletion). agent.ps1's Backup-RegKey does the same.
        """
        if name is None:
            self.journal.append({"key": key, "export": self.registry.export(key)})
        else:
            value = self.registry.get(key, name)
            saved = None if value is None else value.to_json()
            self.journal.append(
                {"key": key, "name": name, "value": saved, "absent_from": self._absent_from(key)}
            )
        return f"twin://{self.computer.name}/backup/{len(self.journal)}"

    def _absent_from(self, key: str) -> str | None:
        """The topmost key of ``key``'s path that does not exist (None: the key exists)."""
        parts = normalize_key(key).split("\\")
        for i in range(2, len(parts) + 1):
            sub = "\\".join(parts[:i])
            if self.registry.key(sub) is None:
                return sub
        return None

    def _leftover(self, saved: dict[str, Any]) -> bool:
        """Keys a value change created that now hold no value at all (restore removes them)."""
        top = saved.get("absent_from")
        if top is None or self.registry.key(top) is None:
            return False
        return not any(k.values for k in self.registry.tree(top))

    def _backup_current(self, saved: dict[str, Any]) -> bool:
        """Whether what a journal entry covers is as it was backed up."""
        if "name" in saved:
            value = self.registry.get(saved["key"], saved["name"])
            same = (None if value is None else value.to_json()) == saved["value"]
            return same and not self._leftover(saved)
        return bool(self.registry.export(saved["key"]) == saved["export"])

    def _restore(self, saved: dict[str, Any]) -> None:
        if "name" not in saved:
            self.registry.restore(saved["export"], saved["key"])
            return
        if saved["value"] is None:
            self.registry.delete_value(saved["key"], saved["name"])
        else:
            self.registry.set(
                saved["key"], saved["name"], saved["value"]["type"], saved["value"]["data"]
            )
        if self._leftover(saved):
            self.registry.delete_key(saved["absent_from"])

    def _apply_one(self, op: Op, changed_before: bool) -> OpResult:
        a = op.args
        name = op.name
        if name == "reg.set":
            before = self.registry.get(a["key"], a["name"])
            stored = check_value(a["type"], a["data"], f"{a['key']}\\{a['name']}")
            if before is not None and before.type == a["type"] and before.data == stored:
                return OpResult(name, False, f"{a['key']}\\{a['name']} already {a['data']!r}")
            backup = self._backup(a["key"], a["name"])
            self.registry.set(a["key"], a["name"], a["type"], a["data"])
            was = "absent" if before is None else repr(before.data)
            return OpResult(name, True, f"{a['key']}\\{a['name']}: {was} -> {a['data']!r}", backup)
        if name == "reg.delete":
            key, value = a["key"], a.get("name")
            present = (
                self.registry.get(key, value) is not None
                if value is not None
                else self.registry.key(key) is not None
            )
            target = key + "\\" + (value or "(Default)") if value is not None else key
            if not present:
                return OpResult(name, False, f"{target} already absent")
            backup = self._backup(key, value)
            if value is not None:
                self.registry.delete_value(key, value)
            else:
                self.registry.delete_key(key)
            return OpResult(name, True, f"deleted {target}", backup)
        if name == "reg.restore":
            prefix = f"twin://{self.computer.name}/backup/"
            index = a["backup"][len(prefix) :] if a["backup"].startswith(prefix) else ""
            if not index.isdigit() or not 0 < int(index) <= len(self.journal):
                raise OpError(f"reg.restore: no backup {a['backup']!r} on {self.computer.name}")
            saved = self.journal[int(index) - 1]
            shown = saved["key"] + ("\\" + saved["name"] if "name" in saved else "")
            if self._backup_current(saved):
                return OpResult(name, False, f"{shown} already as backed up")
            self._restore(saved)
            return OpResult(name, True, f"restored {saved['key']} from {a['backup']}")
        if name == "fw.rule.add":
            changed = self.firewall.add(a["rule"])
            return OpResult(name, changed, f"rule {a['rule'].get('name')}")
        if name == "fw.rule.set":
            n = self.firewall.set(a["match"], a.get("enabled"), a.get("action"))
            return OpResult(name, n > 0, f"{n} rule(s) changed matching {a['match']}")
        if name == "fw.rule.remove":
            n = self.firewall.remove(a["match"])
            return OpResult(name, n > 0, f"{n} rule(s) removed matching {a['match']}")
        if name == "svc.start":
            changed = self.services.start(a["name"])
            note = self._termservice_started() if changed and _is_ts(a["name"]) else ""
            return OpResult(name, changed, _join(f"{a['name']} running", note))
        if name == "svc.stop":
            return OpResult(name, self.services.stop(a["name"]), f"{a['name']} stopped")
        if name == "svc.restart":
            if a.get("if_changed") and not changed_before:
                return OpResult(name, False, f"{a['name']}: nothing changed, no restart")
            self.services.stop(a["name"])
            self.services.start(a["name"])
            note = self._termservice_started() if _is_ts(a["name"]) else ""
            return OpResult(name, True, _join(f"{a['name']} restarted", note))
        if name == "svc.config":
            changed = self.services.config(a["name"], a["start_type"])
            return OpResult(name, changed, f"{a['name']} start type {a['start_type']}")
        if name == "cert.import":
            changed = self.certs.import_pfx(
                a["store"], a["pfx"], a["thumbprint"], a.get("password")
            )
            return OpResult(name, changed, f"{a['thumbprint']} in {a['store']}")
        if name == "cert.remove":
            removed = self.certs.remove(a["store"], a["which"])
            return OpResult(
                name, bool(removed), f"removed {removed or 'nothing'} from {a['store']}"
            )
        if name == "machinekeys.corrupt":
            n = self.certs.corrupt_keys(a["store"])
            return OpResult(name, n > 0, f"{n} private key file(s) overwritten")
        if name == "dns.flush":
            changed = self.dns.flush_if_stale(a["name"], a["expect"])
            return OpResult(name, changed, "cache flushed" if changed else "no stale entry")
        if name == "dns.cache.seed":
            changed = self.dns.cache.get(a["name"].lower()) != a["address"]
            self.dns.cache[a["name"].lower()] = a["address"]
            return OpResult(name, changed, f"cache {a['name']} -> {a['address']}")
        if name == "hosts.set":
            changed = self.dns.hosts.get(a["name"].lower()) != a["address"]
            self.dns.hosts[a["name"].lower()] = a["address"]
            # the hosts entry now answers first; the twin keeps hosts and cache apart (the
            # facts' dns.cache lists resolver-cache answers only), so a cached answer for
            # the same name is dropped, as the hosts file supersedes it
            self.dns.cache.pop(a["name"].lower(), None)
            return OpResult(name, changed, f"hosts {a['name']} -> {a['address']}")
        if name == "hosts.remove":
            changed = self.dns.hosts.pop(a["name"].lower(), None) is not None
            return OpResult(
                name, changed, f"hosts entry for {a['name']} removed" if changed else "no entry"
            )
        if name == "ip.static":
            changed, detail = self.ip.set_static(
                a["alias"], a["address"], a["prefix"], a.get("gateway")
            )
            return OpResult(name, changed, detail)
        if name == "ip.dhcp.lease":
            changed, detail = self.ip.move_lease(a["alias"], a["address"])
            return OpResult(name, changed, detail)
        if name == "hotfix.install":
            return self._install(a["kb"])
        if name == "licensing.clear":
            found = mslicensing.problems(self.registry_view([win.MSLICENSING_KEY]))
            if not found:
                return OpResult(name, False, "MSLicensing healthy or absent")
            backup = self._backup(win.MSLICENSING_KEY)
            self.registry.delete_key(win.MSLICENSING_KEY)
            return OpResult(name, True, f"deleted MSLicensing ({'; '.join(found)})", backup)
        raise OpError(f"op {name} is not implemented by the twin")  # pragma: no cover

    def _install(self, kb: str) -> OpResult:
        if kb in self.hotfixes:
            return OpResult("hotfix.install", False, f"{kb} already installed")
        family, version = win.KNOWN_UPDATES.get(kb, ("", ""))
        if not family or not self.computer.os_build.startswith(family):
            raise OpError(f"hotfix.install: {kb} does not apply to build {self.computer.os_build}")
        self.hotfixes.append(kb)
        self.tspkg_version = version
        self.computer.os_build = version
        return OpResult("hotfix.install", True, f"{kb} installed; tspkg.dll {version}")

    # -- facts ----------------------------------------------------------------------------------
    def registry_view(self, keys: list[str] | tuple[str, ...]) -> dict[str, Any]:
        view: dict[str, Any] = {}
        for key in keys:
            for k in self.registry.tree(key):
                view[k.path] = {
                    "values": {v.name: v.to_json() for v in k.values.values()},
                    "subkeys": self.registry.subkeys(k.path),
                }
        return view

    def gather(self, request: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The facts document, as agent.ps1's gather returns it."""
        request = request or {}
        keys = request.get("keys", win.WATCHED_KEYS)
        ports = {
            win.DEFAULT_RDP_PORT,
            *win.WEBSOCKET_PORTS,
            policy.listener_port(self.lookup),
            *(int(p) for p in request.get("ports", [])),
        }
        rules = [
            r.to_json()
            for r in self.firewall.rules
            if r.group in (win.RD_GROUP, win.RD_WS_GROUP)
            or any(
                port_matches(r.local_port if r.direction == "In" else r.remote_port, p)
                for p in ports
            )
        ]
        probes = {url: self.probe_url(url) for url in request.get("probe_urls", [])}
        return {
            "computer": {
                "name": self.computer.name,
                "os_caption": self.computer.os_caption,
                "os_build": self.computer.os_build,
                "kind": self.computer.kind,
            },
            "registry": {
                k: {"values": v["values"], "subkeys": v["subkeys"]}
                for k, v in self.registry_view(list(keys)).items()
            },
            "firewall": {
                "active_profile": self.firewall.active_profile,
                "profiles": self.firewall.snapshot()["profiles"],
                "rules": rules,
            },
            "services": {
                n: s for n, s in self.services.snapshot().items() if n in win.WATCHED_SERVICES
            },
            "certificates": self.certs.facts(),
            "dns": self.dns.snapshot(),
            "credssp": {"tspkg_version": self.tspkg_version},
            "hotfixes": sorted(self.hotfixes),
            "probes": probes,
            # optional section: only when the request names events (provider/id)
            **({"events": self.events.query(request["events"])} if "events" in request else {}),
            # optional section: only when the request asks for ip (true or ["ipv4"])
            **({"ip": self.ip.snapshot()} if wants_ip(request) else {}),
        }

    def probe_url(self, url: str) -> dict[str, Any]:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):  # as agent.ps1: an ldap:/// location has no host
            return {"reachable": False, "detail": f"not probed: {scheme or 'no'} scheme"}
        host = urlsplit(url).hostname or ""
        res = self.dns.resolve(host, self.zone)
        if res.address is None:
            return {"reachable": False, "detail": f"{host} does not resolve"}
        ok = self.http_reach(res.address)
        return {
            "reachable": ok,
            "detail": f"{host} -> {res.address} ({res.source}): "
            + ("answered" if ok else "no answer"),
        }

    def snapshot(self) -> dict[str, Any]:
        """Whole persistent state, for the no-collateral diff. The DNS cache is volatile
        and left out; the hosts file is in; the IPv4 configuration is in when the twin has
        interfaces (a changed address is then a diff, ``ip/interfaces/0/addresses/0/...``)."""
        return {
            "computer": vars(self.computer).copy(),
            "registry": self.registry.snapshot(),
            "firewall": self.firewall.snapshot(),
            "services": self.services.snapshot(),
            "certificates": self.certs.snapshot(),
            "hosts": self.dns.snapshot()["hosts"],
            "hotfixes": sorted(self.hotfixes),
            "tspkg_version": self.tspkg_version,
            **({"ip": self.ip.snapshot()} if self.ip.interfaces else {}),
        }


T = TypeVar("T")

_STATE = (
    "computer",
    "registry",
    "firewall",
    "services",
    "certs",
    "dns",
    "hotfixes",
    "tspkg_version",
    "ip",
)


def clone(state: T) -> T:
    """A deep copy of plain twin state. A pickle round trip copies the registry, firewall,
    services and stores (plain data) several times faster than ``copy.deepcopy``, which
    matters: every batch saves the machine for its rollback and every scenario builds its
    twins from a template (docs/scale.md, the sim suite's cost)."""
    copied: T = pickle.loads(pickle.dumps(state, pickle.HIGHEST_PROTOCOL))
    return copied


def _is_ts(name: str) -> bool:
    return name.lower() == win.TERMSERVICE.lower()


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if b else a
