"""The vagrant provider: the Vagrantfile's ``client`` and ``host`` Windows VMs.

Run once per session, before the first scenario: ``vagrant status``; ``vagrant up`` for a
machine that is not running (its output streamed as progress); per machine, ``vagrant
snapshot list``; a machine that has a ``baseline`` snapshot is restored to it (leftovers
of an earlier run go); the agent is checked (installed when missing or stale); a machine
without a ``baseline`` snapshot (or whose agent had to be installed) gets one saved, so
the snapshot holds the current agent.

Every later reset is ``vagrant snapshot restore <vm> baseline --no-provision`` per
machine, nothing else: never ``destroy``, never ``up --provision``. A restore reverts
the VM's memory too, so the WinRM shells are closed before and reopened after it.

WinRM is reached where ``vagrant winrm-config <vm>`` says (HostName, Port, User,
Password: the forwarded port on 127.0.0.1 with VirtualBox NAT). When that command fails
(an old Vagrant, a machine without a WinRM communicator) the fallback is the machine's
private address from the lab file (client 192.168.56.10, host 192.168.56.11), port 5985,
and the Vagrantfile's ``$RDPLAB_VAGRANT_USERNAME`` / ``$RDPLAB_VAGRANT_PASSWORD``
(default ``vagrant``/``vagrant``, the boxes' throwaway account). The probe dials the
host's private address from the lab file, as the client does.

Under pytest-xdist, worker N drives pair N of the Vagrantfile (``worker=N``; rdplab.workers):
every vagrant command gets ``RDPLAB_WORKER=N``, the machines are ``client-wN`` and
``host-wN``, and the scenarios run on the pair's own addresses (``place``).

The router (``RDPLAB_ROUTER=1``, pair 0 only; docs/vagrant.md): a scenario whose lab has a
router (``network.router``) gets the Vagrantfile's ``router`` machine, a Debian NAT
gateway driven over SSH (``rdplab.backends.router_ssh``), the first time one needs it:
``vagrant status``, ``vagrant up router`` when it is not running, ``vagrant ssh-config
router`` (where SSH is, the user, the key Vagrant made), and once ``vagrant ssh router -c``
to read the router's ed25519 host key (written to ``.vagrant/rdplab/router_known_hosts``,
after which the key is checked strictly) and the interface names its provisioning wrote to
``/etc/rdplab/router.env``. The router is not snapshotted: every reset brings rdplab's rules
back to its state when it was first reached (one SSH command). ``place`` moves the lab
file's router addresses to the Vagrantfile's (``ROUTER_LAN_ADDRESS``,
``ROUTER_OUTSIDE_ADDRESS``: .1 of a host-only network is the hypervisor's own).

``teardown`` (``--lab-teardown[=halt|destroy]``): at the end of the run ``vagrant halt``
(the snapshots stay: the next run restores instead of rebuilding) or ``vagrant destroy
--force``; by default the VMs are left running.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rdplab.backends.base import CallLog
from rdplab.backends.router_ssh import SSHRouterBackend
from rdplab.catalog.base import ROLES, Role
from rdplab.errors import ProviderError
from rdplab.lab import Scenario
from rdplab.network import Network
from rdplab.providers.remote import RemoteProvider
from rdplab.transports.base import Transport
from rdplab.workers import WORKER_ENV, vagrant_machines, worker_network

SNAPSHOT = "baseline"
TEARDOWNS = ("none", "halt", "destroy")
USERNAME_ENV = "RDPLAB_VAGRANT_USERNAME"  # the Vagrantfile's own settings
PASSWORD_ENV = "RDPLAB_VAGRANT_PASSWORD"
INSTALL_HINT = "install Vagrant (https://developer.hashicorp.com/vagrant/install)"
ROUTER_ENV = "RDPLAB_ROUTER"  # 1: the Vagrantfile defines the router (pair 0 only)
ROUTER_VM = "router"
#: the router's addresses in the Vagrantfile: the lab LAN's and the outside network's .1
#: belong to the hypervisor's host-only adapters, so the router takes .2 of each
ROUTER_LAN_ADDRESS = "192.168.56.2"
ROUTER_OUTSIDE_ADDRESS = "203.0.113.2"
ROUTER_KNOWN_HOSTS = Path(".vagrant") / "rdplab" / "router_known_hosts"
#: what the router's provisioning leaves for rdplab (vagrant/provision/router.sh)
ROUTER_ENV_FILE = "/etc/rdplab/router.env"
ROUTER_HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"


class VagrantProvider(RemoteProvider):
    name = "vagrant"
    runs_on = "Vagrant Windows VMs (reset: snapshot restore)"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        teardown: bool | str = False,
        machines: dict[Role, str] | None = None,
        progress: Callable[[str], None] | None = None,
        worker: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(root or Path.cwd()).resolve()
        mode = ("halt" if teardown else "none") if isinstance(teardown, bool) else teardown
        if mode not in TEARDOWNS:
            raise ProviderError(f"--lab-teardown must be one of {', '.join(TEARDOWNS)}")
        self.teardown: str = mode
        self.worker = worker
        self.vms: dict[Role, str] = dict(machines or vagrant_machines(worker))
        self.progress = progress or _to_stderr
        self.network = Network()
        self._vagrant: Any = None
        self._stderr = ""
        self._prepared = False
        self._fresh = False
        self._winrm: dict[str, dict[str, str] | None] = {}
        self._router_used = False

    # -- vagrant ---------------------------------------------------------------------------
    @property
    def vagrant(self) -> Any:
        if self._vagrant is None:
            try:
                import vagrant
            except ImportError:
                raise ProviderError(
                    "the vagrant provider needs python-vagrant: pip install 'rdplab[real]'"
                ) from None
            if vagrant.get_vagrant_executable() is None:  # type: ignore[no-untyped-call]
                raise ProviderError(
                    f"the vagrant binary is not on PATH: {INSTALL_HINT}, or run the lab on"
                    " existing machines with --lab-provider=inventory"
                )
            if not (self.root / "Vagrantfile").is_file():
                raise ProviderError(f"no Vagrantfile in {self.root} (run pytest from the repo)")
            self._vagrant = vagrant.Vagrant(  # type: ignore[no-untyped-call]
                root=str(self.root),
                quiet_stdout=False,
                err_cm=self._capture_stderr,
                env={**os.environ, WORKER_ENV: str(self.worker)},
            )
        return self._vagrant

    @contextmanager
    def _capture_stderr(self) -> Iterator[IO[bytes]]:
        with tempfile.TemporaryFile() as f:
            try:
                yield f
            finally:
                f.seek(0)
                self._stderr = f.read().decode("utf-8", "replace")

    def _run(self, *args: str) -> str:
        """One vagrant command, its stdout returned (python-vagrant has no vm name or
        --no-provision on its snapshot calls, so they go through its command runner)."""
        try:
            out: str = self.vagrant._run_vagrant_command(list(args))
        except subprocess.CalledProcessError as exc:
            raise self._error(args, exc) from None
        return out

    def _error(
        self, args: tuple[str, ...] | list[str], exc: subprocess.CalledProcessError
    ) -> ProviderError:
        out = exc.output.decode("utf-8", "replace") if isinstance(exc.output, bytes) else ""
        return explain(" ".join(args), out + "\n" + self._stderr, exc.returncode, self.root)

    def status(self) -> dict[str, str]:
        try:
            statuses = self.vagrant.status()
        except subprocess.CalledProcessError as exc:
            raise self._error(["status"], exc) from None
        states = {s.name: str(s.state) for s in statuses}
        for role, vm in self.vms.items():
            if vm not in states:
                raise ProviderError(
                    f"the Vagrantfile in {self.root} defines no machine {vm!r} for the {role}"
                    f" (it defines: {', '.join(sorted(states)) or 'none'})"
                )
        return states

    def up(self, vm: str) -> None:
        self.progress(f"rdplab: vagrant up {vm} (the first time this takes a while)")
        try:
            for line in self.vagrant.up(vm_name=vm, stream_output=True):
                self.progress(line.rstrip())
        except subprocess.CalledProcessError as exc:
            raise self._error(["up", vm], exc) from None

    def snapshots(self, vm: str) -> list[str]:
        out = self._run("snapshot", "list", vm)
        return [
            line.strip()
            for line in out.splitlines()
            if line.strip() and not line.startswith("==>") and "No snapshots" not in line
        ]

    # -- the provider ----------------------------------------------------------------------
    def prepare(self) -> None:
        """Up, baseline snapshots, agent: once per session."""
        states = self.status()
        for role in ROLES:
            vm = self.vms[role]
            if states[vm] != "running":
                self.up(vm)
        after = self.status()
        for role in ROLES:
            vm = self.vms[role]
            if after[vm] != "running":
                raise ProviderError(
                    f"machine {vm} ({role}) is {after[vm].replace('_', ' ')} after vagrant up;"
                    f" run `vagrant up {vm}` in {self.root} and read its output"
                )
        for role in ROLES:
            vm = self.vms[role]
            has = SNAPSHOT in self.snapshots(vm)
            if has:
                self.restore_snapshot(vm)
            self.machine(role)  # opens WinRM and checks (installs) the agent
            fresh_agent = self.agent_status[role] != "agent current"
            if not has or fresh_agent:
                self.drop(role)
                if has:
                    self.progress(f"rdplab: {vm}: agent updated, saving the baseline again")
                    self._run("snapshot", "delete", vm, SNAPSHOT)
                self.progress(f"rdplab: vagrant snapshot save {vm} {SNAPSHOT}")
                self._run("snapshot", "save", vm, SNAPSHOT)
        self._prepared = True
        self._fresh = True

    def restore_snapshot(self, vm: str) -> None:
        self._run("snapshot", "restore", vm, SNAPSHOT, "--no-provision")

    def place(self, scenario: Scenario) -> Scenario:
        """The scenario on this worker's pair: the lab file's addresses moved to the pair's
        /24, as the Vagrantfile puts them (pair 0: unchanged), and a router's addresses
        to the Vagrantfile's router's."""
        net = scenario.network
        if net.router is not None and self.router_enabled:
            router = dataclasses.replace(
                net.router,
                lan_address=ROUTER_LAN_ADDRESS,
                outside_address=ROUTER_OUTSIDE_ADDRESS,
            )
            net = dataclasses.replace(net, router=router)
        if self.worker != 0:
            net = worker_network(net, self.worker)
        if net is scenario.network:
            return scenario
        return dataclasses.replace(scenario, network=net)

    # -- the router ------------------------------------------------------------------------
    @property
    def router_enabled(self) -> bool:
        """The Vagrantfile defines the router for this run's vagrant commands."""
        return os.environ.get(ROUTER_ENV, "").strip() == "1"

    def no_router(self, scenario: Scenario) -> str:
        return (
            f"scenario {scenario.id} has a router (network.router in its lab file): bring up"
            f" the Vagrantfile's router with {ROUTER_ENV}=1 vagrant up {ROUTER_VM} in"
            f" {self.root}, and run with {ROUTER_ENV}=1 set (docs/vagrant.md, The router)"
        )

    def open_router(self) -> SSHRouterBackend | None:
        if not self.router_enabled:
            return None
        if self.worker != 0:
            raise ProviderError(
                f"the Vagrantfile's router belongs to pair 0; worker {self.worker} has none:"
                " run the scenarios with a router without -n (docs/vagrant.md, The router)"
            )
        from rdplab.transports.ssh import SSHTransport

        states = self.status()
        if ROUTER_VM not in states:
            raise ProviderError(
                f"the Vagrantfile in {self.root} defines no machine {ROUTER_VM!r} although"
                f" {ROUTER_ENV}=1 is set (an older Vagrantfile?)"
            )
        if states[ROUTER_VM] != "running":
            self.up(ROUTER_VM)
        self._router_used = True
        conf = self.ssh_config(ROUTER_VM)
        known_hosts, interfaces = self.learn_router(conf)
        transport = SSHTransport(
            conf["HostName"],
            int(conf["Port"]),
            conf["User"],
            None,
            conf["IdentityFile"],
            known_hosts,
            timeout=30.0,
        )
        return SSHRouterBackend(
            transport,
            CallLog(),
            client_link=interfaces["outside_interface"],
            lan_interface=interfaces["lan_interface"],
            outside_interface=interfaces["outside_interface"],
            sudo=True,  # the boxes' vagrant user: passwordless sudo
        )

    def ssh_config(self, vm: str) -> dict[str, str]:
        """``vagrant ssh-config <vm>``: HostName, Port, User and the first IdentityFile."""
        out = self._run("ssh-config", vm)
        conf: dict[str, str] = {}
        for line in out.splitlines():
            key, _, value = line.strip().partition(" ")
            value = value.strip().strip('"')
            if key and value and key not in conf:  # the first IdentityFile is Vagrant's own
                conf[key] = value
        missing = [k for k in ("HostName", "Port", "User", "IdentityFile") if k not in conf]
        if missing:
            raise ProviderError(
                f"vagrant ssh-config {vm} names no {', '.join(missing)}; run `vagrant"
                f" ssh-config {vm}` in {self.root} and read its output"
            )
        return conf

    def learn_router(self, conf: dict[str, str]) -> tuple[Path, dict[str, str]]:
        """The router's host key and interface names, read over Vagrant's own SSH
        connection (``vagrant ssh -c``; Vagrant itself does not check its machines' host
        keys). The key goes to a known_hosts file that every later connection checks."""
        out = self._run("ssh", ROUTER_VM, "-c", f"cat {ROUTER_HOST_KEY} {ROUTER_ENV_FILE}")
        key: list[str] = []
        interfaces: dict[str, str] = {}
        for line in out.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "ssh-ed25519":
                key = words[:2]
            name, sep, value = line.strip().partition("=")
            if sep and name in ("lan_interface", "outside_interface"):
                interfaces[name] = value.strip()
        if not key or len(interfaces) != 2:
            what = "its ed25519 host key" if not key else f"the interfaces in {ROUTER_ENV_FILE}"
            raise ProviderError(
                f"the router VM did not show {what}; provision it again: {ROUTER_ENV}=1"
                f" vagrant provision {ROUTER_VM} (in {self.root})"
            )
        host, port = conf["HostName"], int(conf["Port"])
        name = host if port == 22 else f"[{host}]:{port}"
        path = self.root / ROUTER_KNOWN_HOSTS
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{name} {key[0]} {key[1]}\n", encoding="utf-8")
        return path, interfaces

    def preflight(self) -> None:
        """The binary, the Vagrantfile, a usable hypervisor and both machines defined
        (``vagrant status``: nothing is started)."""
        self.status()

    def reach(self) -> None:
        if not self._prepared:
            self.prepare()

    def restore(self, scenario: Scenario, roles: tuple[Role, ...] = ROLES) -> None:
        self.network = scenario.network
        if not self._prepared:
            self.prepare()
        if self._fresh:  # prepare just restored or saved: the machines are at baseline
            self._fresh = False
            return
        for role in roles:
            self.progress(f"rdplab: vagrant snapshot restore {self.vms[role]} {SNAPSHOT}")
            self.drop(role)  # the restore reverts memory: the shell is gone
            self.restore_snapshot(self.vms[role])

    def winrm_config(self, vm: str) -> dict[str, str] | None:
        """``vagrant winrm-config`` (asked once per machine: forwarded ports survive a
        restore, and every vagrant command costs seconds of Ruby start-up)."""
        if vm not in self._winrm:
            self._winrm[vm] = self._winrm_config(vm)
        return self._winrm[vm]

    def _winrm_config(self, vm: str) -> dict[str, str] | None:
        try:
            out = self._run("winrm-config", vm)
        except ProviderError:
            return None
        conf = {}
        for line in out.splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                conf[key] = value.strip()
        return conf if "HostName" in conf and "Port" in conf else None

    def open_transport(self, role: Role) -> Transport:
        from rdplab.transports.winrm import WinRMTransport

        vm = self.vms[role]
        conf = self.winrm_config(vm)
        if conf is not None:
            return WinRMTransport(
                conf["HostName"],
                int(conf["Port"]),
                conf.get("User") or os.environ.get(USERNAME_ENV, "vagrant"),
                conf.get("Password") or os.environ.get(PASSWORD_ENV, "vagrant"),
                "ntlm",
            )
        address = self.network.client_address if role == "client" else self.network.host_address
        self.progress(f"rdplab: {vm}: no winrm-config; using {address}:5985 from the lab file")
        return WinRMTransport(
            address,
            5985,
            os.environ.get(USERNAME_ENV, "vagrant"),
            os.environ.get(PASSWORD_ENV, "vagrant"),
            "ntlm",
        )

    def rdp_endpoint(self, scenario: Scenario) -> tuple[str, int]:
        return scenario.network.host_address, scenario.network.target_port

    def close(self) -> None:
        super().close()
        if self.teardown == "none" or self._vagrant is None:
            return
        vms = [self.vms[role] for role in ROLES] + ([ROUTER_VM] if self._router_used else [])
        for vm in vms:
            self.progress(f"rdplab: vagrant {self.teardown} {vm}")
            try:
                if self.teardown == "halt":
                    self.vagrant.halt(vm_name=vm)
                else:
                    self.vagrant.destroy(vm_name=vm)
            except subprocess.CalledProcessError as exc:
                raise self._error([self.teardown, vm], exc) from None


def explain(command: str, output: str, rc: int, root: Path) -> ProviderError:
    """A vagrant failure as one clear line: what is missing and how to fix it."""
    text = output.replace("%!(VAGRANT_COMMA)", ",").replace("\\n", "\n")
    if "NoDefaultProvider" in text or "No usable default provider" in text:
        return ProviderError(
            "vagrant found no usable hypervisor provider: install VirtualBox (or the provider"
            " the Vagrantfile names, e.g. vagrant plugin install vagrant-libvirt)"
        )
    m = re.search(r"provider '([^']+)' could not be found", text)
    if m or "ProviderNotFound" in text:
        name = m.group(1) if m else "?"
        return ProviderError(
            f"the vagrant provider {name!r} is not installed: vagrant plugin install"
            f" vagrant-{name} (or install VirtualBox and use it)"
        )
    m = re.search(r"provider '([^']+)' that was requested .* isn't usable", text, re.S)
    if m or "ProviderNotUsable" in text:
        name = m.group(1) if m else "?"
        return ProviderError(
            f"the hypervisor for the vagrant provider {name!r} is not usable on this"
            f" machine: {_first_reason(text)}"
        )
    m = re.search(r"[Bb]ox '([^']+)' could not be found", text)
    if m:
        return ProviderError(
            f"the vagrant box {m.group(1)!r} is missing: vagrant box add {m.group(1)}"
            " (or build it; see the Vagrantfile)"
        )
    if "NoEnvironmentError" in text:
        return ProviderError(f"no Vagrantfile in {root} (run pytest from the repo)")
    m = re.search(r"machine with the name '([^']+)' was not found", text)
    if m:
        return ProviderError(f"the Vagrantfile in {root} defines no machine {m.group(1)!r}")
    if "not created" in text or "not_created" in text:
        return ProviderError(
            f"vagrant {command}: the machine is not created; run `vagrant up` in {root}"
        )
    last = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return ProviderError(
        f"vagrant {command} failed (exit {rc}): {last[-1] if last else 'no output'}"
    )


def _first_reason(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "," not in ln[:12]]
    return lines[-1] if lines else "see `vagrant up` output"


def _to_stderr(line: str) -> None:
    print(line, file=sys.__stderr__, flush=True)


__all__ = ["SNAPSHOT", "VagrantProvider", "explain"]
