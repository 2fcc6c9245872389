"""The vagrant provider against a fake ``vagrant`` executable (python-vagrant shells out
to whatever ``vagrant`` is first on PATH) and loopback WS-Management responders as the
VMs' WinRM endpoints (the fake's ``winrm-config`` points at them).

The fake records every argv to a log and keeps the machines' states and snapshots in a
JSON file; knobs make it fail the way Vagrant does (its real texts: no usable provider,
a box that cannot be found, a machine that stays not created). The assertions are on
the exact command sequence: the first reset brings the lab up and saves a baseline
snapshot per machine, every later reset is ``snapshot restore --no-provision`` and
nothing else, and ``destroy`` or ``up --provision`` never run unless teardown asks.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rdplab.errors import ProviderError
from rdplab.lab import load_lab
from rdplab.providers import get_provider
from rdplab.providers.vagrant import VagrantProvider
from rdplab.scenario import run_scenario
from rdplab.transports.winrm import WinRMTransport

from .test_provider_inventory import wire
from .wsman_responder import Responder, responder

REPO = Path(__file__).resolve().parents[2]
LAB = load_lab(REPO / "labs" / "rdp-0x904.yaml")

FAKE = r'''#!{python}
"""A fake vagrant: logs argv, answers from state.json next to it."""
import json, os, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATE = HERE / "state.json"
state = json.loads(STATE.read_text())
args = sys.argv[1:]
with (HERE / "calls.log").open("a") as log:
    log.write(json.dumps(args) + "\n")
with (HERE / "env.log").open("a") as log:
    log.write(os.environ.get("RDPLAB_WORKER", "-") + "\n")
knobs = state.get("knobs", {{}})
ts = int(time.time())


def save():
    STATE.write_text(json.dumps(state))


def fail(text, code=1, stream=sys.stderr):
    stream.write(text)
    sys.exit(code)


NO_PROVIDER = (
    "No usable default provider could be found for your system.\\n\\nVagrant relies on"
    " interactions with 3rd party systems%!(VAGRANT_COMMA) known as\\n\"providers\""
    "%!(VAGRANT_COMMA) to provide Vagrant with resources to run development\\nenvironments."
    " Examples are VirtualBox%!(VAGRANT_COMMA) VMware%!(VAGRANT_COMMA) Hyper-V."
)
if knobs.get("no_provider"):
    if "--machine-readable" in args:
        print(f"{{ts}},,ui,error,{{NO_PROVIDER}}")
        line = f"{{ts}},,error-exit,Vagrant::Errors::NoDefaultProvider,{{NO_PROVIDER}}\n"
        fail(line, 1, sys.stdout)
    fail(NO_PROVIDER.replace("%!(VAGRANT_COMMA)", ",").replace("\\n", "\n") + "\n")

machines = state["machines"]
cmd = args[0]
if cmd == "--version":
    print("Vagrant 2.4.1")
elif cmd == "status":
    for name, m in machines.items():
        print(f"{{ts}},{{name}},metadata,provider,virtualbox")
        print(f"{{ts}},{{name}},provider-name,virtualbox")
        print(f"{{ts}},{{name}},state,{{m['state']}}")
elif cmd == "up":
    vm = args[1]
    print(f"Bringing machine '{{vm}}' up with 'virtualbox' provider...")
    if knobs.get("box_missing"):
        box = machines[vm]["box"]
        print(f"==> {{vm}}: Box '{{box}}' could not be found. Attempting to find and install...")
        fail(
            f"The box '{{box}}' could not be found or\ncould not be accessed in the remote"
            " catalog. If this is a private\nbox on HashiCorp's Vagrant Cloud, please verify"
            " you're logged in via\n`vagrant login`.\n"
        )
    if not knobs.get("up_does_nothing"):
        machines[vm]["state"] = "running"
        save()
    print(f"==> {{vm}}: Machine booted and ready!")
elif cmd == "snapshot":
    sub, vm = args[1], args[2]
    m = machines[vm]
    if sub == "list":
        if not m["snapshots"]:
            print(f"==> {{vm}}: No snapshots have been taken yet!")
        for s in m["snapshots"]:
            print(s)
    elif sub == "save":
        m["snapshots"].append(args[3])
        save()
        print(f"==> {{vm}}: Snapshotting the machine as '{{args[3]}}'...")
    elif sub == "delete":
        m["snapshots"].remove(args[3])
        save()
    elif sub == "restore":
        if args[3] not in m["snapshots"]:
            fail(f"The snapshot name `{{args[3]}}` was not found for `{{vm}}`.\n")
        m["state"] = "running"
        m["restores"] = m.get("restores", 0) + 1
        save()
        print(f"==> {{vm}}: Restoring the snapshot '{{args[3]}}'...")
elif cmd == "winrm-config":
    vm = args[1]
    m = machines[vm]
    if knobs.get("no_winrm_config"):
        fail("This command requires a machine with a WinRM communicator.\n")
    print(f"Host {{vm}}\n  HostName 127.0.0.1\n  User {{m['user']}}\n  Password {{m['password']}}")
    print(f"  Port {{m['port']}}\n  RDPHostName 127.0.0.1\n  RDPPort 53389")
elif cmd in ("halt", "destroy"):
    machines[args[1]]["state"] = "poweroff" if cmd == "halt" else "not_created"
    if cmd == "destroy":
        machines[args[1]]["snapshots"] = []
    save()
else:
    fail(f"fake vagrant: unexpected command {{args}}\n", 2)
'''


class FakeVagrant:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.state_file = directory / "state.json"
        self.log = directory / "calls.log"

    @property
    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return data

    def set_state(self, state: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(state))

    def knob(self, name: str, value: bool = True) -> None:
        state = self.state
        state.setdefault("knobs", {})[name] = value
        self.set_state(state)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def clear(self) -> None:
        self.log.unlink(missing_ok=True)


@pytest.fixture
def fake_vagrant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeVagrant:
    """A fake vagrant first on PATH; a project directory with a Vagrantfile."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "vagrant"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "Vagrantfile").write_text("# the fake does not read it\n")
    fake = FakeVagrant(bin_dir)
    fake.set_state(
        {
            "machines": {
                vm: {
                    "state": "not_created",
                    "snapshots": [],
                    "box": f"rdplab/{base}",
                    "user": "labadmin",
                    "password": "S3cret-Lab-Pa55!",
                    "port": 1,
                }
                for vm, base in (("client", "windows-11"), ("host", "windows-server-2022"))
            }
        }
    )
    return fake


@pytest.fixture
def vms(fake_vagrant: FakeVagrant) -> Iterator[dict[str, Responder]]:
    """The VMs' WinRM endpoints: loopback responders the fake's winrm-config names."""
    with (
        responder(baseline="windows-11", computer_name="CLIENT") as client,
        responder(baseline="windows-server-2022", computer_name="HOST") as host,
    ):
        state = fake_vagrant.state
        for vm, r in (("client", client), ("host", host)):
            wire(r.twin, LAB.scenario("healthy").network)
            state["machines"][vm]["port"] = r.port
        fake_vagrant.set_state(state)
        yield {"client": client, "host": host}


def provider(tmp_path: Path, **kw: Any) -> tuple[VagrantProvider, list[str]]:
    lines: list[str] = []
    return VagrantProvider(root=tmp_path / "project", progress=lines.append, **kw), lines


def never_rebuilds(calls: list[list[str]]) -> None:
    __tracebackhide__ = True
    for argv in calls:
        assert argv[0] != "destroy", f"a reset destroyed a VM: {argv}"
        assert "--provision" not in argv, f"a reset provisioned again: {argv}"


# -- the lifecycle ------------------------------------------------------------------------------
@pytest.mark.winrm_loopback
def test_first_run_ups_and_snapshots_later_resets_only_restore(
    fake_vagrant: FakeVagrant, vms: dict[str, Responder], tmp_path: Path
) -> None:
    p, progress = provider(tmp_path)
    healthy = LAB.scenario("healthy")
    try:
        p.reset(healthy)
        first = fake_vagrant.calls()
        assert first == [
            ["status", "--machine-readable"],
            ["up", "client"],
            ["up", "host"],
            ["status", "--machine-readable"],
            ["snapshot", "list", "client"],
            ["winrm-config", "client"],
            ["snapshot", "save", "client", "baseline"],
            ["snapshot", "list", "host"],
            ["winrm-config", "host"],
            ["snapshot", "save", "host", "baseline"],
        ]
        assert "==> client: Machine booted and ready!" in progress  # up's output streamed
        for r in vms.values():  # the agent went in before the snapshot was taken
            assert r.kinds["hash"] == 1 and r.kinds["finish"] == 1

        for _ in range(2):
            fake_vagrant.clear()
            run = run_scenario(p, healthy)
            assert run.error is None, f"{run.failed_step}: {run.error}"
            assert fake_vagrant.calls() == [
                ["snapshot", "restore", "client", "baseline", "--no-provision"],
                ["snapshot", "restore", "host", "baseline", "--no-provision"],
            ]
        for r in vms.values():
            assert r.kinds["hash"] == 1  # the agent is checked once per machine, not per reset
            # set-up (closed before the snapshot), first reset, then again after each
            # restore: the restored VM's memory has no shell of ours
            assert r.shells_opened == 4
        assert run.max_calls_per_machine_phase == 1
    finally:
        p.close()
    assert fake_vagrant.calls()[-1][0] == "snapshot"  # no teardown by default
    never_rebuilds(fake_vagrant.calls())
    assert {m["state"] for m in fake_vagrant.state["machines"].values()} == {"running"}


@pytest.mark.winrm_loopback
def test_a_second_session_restores_instead_of_rebuilding(
    fake_vagrant: FakeVagrant, vms: dict[str, Responder], tmp_path: Path
) -> None:
    first, _ = provider(tmp_path)
    first.reset(LAB.scenario("healthy"))
    first.close()
    fake_vagrant.clear()
    second, _ = provider(tmp_path)
    try:
        second.reset(LAB.scenario("healthy"))
        second.reset(LAB.scenario("firewall-blocked"))
    finally:
        second.close()
    assert fake_vagrant.calls() == [
        ["status", "--machine-readable"],
        ["status", "--machine-readable"],
        ["snapshot", "list", "client"],
        ["snapshot", "restore", "client", "baseline", "--no-provision"],
        ["winrm-config", "client"],
        ["snapshot", "list", "host"],
        ["snapshot", "restore", "host", "baseline", "--no-provision"],
        ["winrm-config", "host"],
        ["snapshot", "restore", "client", "baseline", "--no-provision"],
        ["snapshot", "restore", "host", "baseline", "--no-provision"],
    ]
    never_rebuilds(fake_vagrant.calls())


@pytest.mark.winrm_loopback
def test_a_stale_agent_is_replaced_and_the_baseline_saved_again(
    fake_vagrant: FakeVagrant, vms: dict[str, Responder], tmp_path: Path
) -> None:
    first, _ = provider(tmp_path)
    first.reset(LAB.scenario("healthy"))
    first.close()
    vms["host"].install_agent(b"# an older agent\r\n")
    fake_vagrant.clear()
    second, progress = provider(tmp_path)
    try:
        second.reset(LAB.scenario("healthy"))
    finally:
        second.close()
    host_calls = [c for c in fake_vagrant.calls() if "host" in c]
    assert host_calls == [
        ["snapshot", "list", "host"],
        ["snapshot", "restore", "host", "baseline", "--no-provision"],
        ["winrm-config", "host"],
        ["snapshot", "delete", "host", "baseline"],
        ["snapshot", "save", "host", "baseline"],
    ]
    assert "rdplab: host: agent updated, saving the baseline again" in progress
    never_rebuilds(fake_vagrant.calls())


@pytest.mark.parametrize(
    ("teardown", "verb"), [("halt", "halt"), (True, "halt"), ("destroy", "destroy")]
)
@pytest.mark.winrm_loopback
def test_teardown_only_on_request(
    fake_vagrant: FakeVagrant,
    vms: dict[str, Responder],
    tmp_path: Path,
    teardown: Any,
    verb: str,
) -> None:
    p, _ = provider(tmp_path, teardown=teardown)
    p.reset(LAB.scenario("healthy"))
    never_rebuilds(fake_vagrant.calls())
    fake_vagrant.clear()
    p.close()
    expected = [[verb, "client"], [verb, "host"]]
    if verb == "destroy":
        expected = [[verb, "client", "--force"], [verb, "host", "--force"]]
    assert fake_vagrant.calls() == expected


def test_winrm_address_fallback_is_the_lab_network(
    fake_vagrant: FakeVagrant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_vagrant.knob("no_winrm_config")
    monkeypatch.setenv("RDPLAB_VAGRANT_USERNAME", "labadmin")
    monkeypatch.setenv("RDPLAB_VAGRANT_PASSWORD", "Fallback-Secret-1")
    p, progress = provider(tmp_path)
    t = p.open_transport("host")
    assert isinstance(t, WinRMTransport)
    assert (t.endpoint, t.username, t.auth) == (
        "http://192.168.56.11:5985/wsman",
        "labadmin",
        "ntlm",
    )
    assert "Fallback-Secret-1" not in repr(t)
    assert progress == ["rdplab: host: no winrm-config; using 192.168.56.11:5985 from the lab file"]


@pytest.mark.winrm_loopback
def test_worker_drives_its_own_pair(
    fake_vagrant: FakeVagrant, vms: dict[str, Responder], tmp_path: Path
) -> None:
    """pytest-xdist worker gw2: pair 2 of the Vagrantfile, told by RDPLAB_WORKER=2 on every
    vagrant command, its machines client-w2/host-w2, the scenario on 192.168.58.x."""
    state = fake_vagrant.state
    state["machines"] = {f"{vm}-w2": m for vm, m in state["machines"].items()}
    fake_vagrant.set_state(state)
    p, _ = provider(tmp_path, worker=2)
    assert p.vms == {"client": "client-w2", "host": "host-w2"}
    healthy = p.place(LAB.scenario("healthy"))
    assert (healthy.network.client_address, healthy.network.host_address) == (
        "192.168.58.10",
        "192.168.58.11",
    )
    assert p.rdp_endpoint(healthy) == ("192.168.58.11", 3389)
    try:
        run = run_scenario(p, LAB.scenario("healthy"))
    finally:
        p.close()
    assert run.error is None, f"{run.failed_step}: {run.error}"
    assert run.scenario.network.host_address == "192.168.58.11"  # the reset step placed it
    names = {a[-1] for a in fake_vagrant.calls() if a[0] in ("up", "winrm-config")}
    assert names == {"client-w2", "host-w2"}
    env = (fake_vagrant.dir / "env.log").read_text().split()
    assert env and set(env) == {"2"}


def test_rdp_endpoint_is_the_hosts_private_address(tmp_path: Path) -> None:
    p, _ = provider(tmp_path)
    assert p.rdp_endpoint(LAB.scenario("healthy")) == ("192.168.56.11", 3389)


# -- clear errors ---------------------------------------------------------------------------------
def test_missing_vagrant_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "Vagrantfile").write_text("")
    p, _ = provider(tmp_path)
    with pytest.raises(ProviderError) as info:
        p.reset(LAB.scenario("healthy"))
    assert str(info.value) == (
        "the vagrant binary is not on PATH: install Vagrant"
        " (https://developer.hashicorp.com/vagrant/install), or run the lab on existing"
        " machines with --lab-provider=inventory"
    )


def test_missing_hypervisor_provider(fake_vagrant: FakeVagrant, tmp_path: Path) -> None:
    fake_vagrant.knob("no_provider")
    p, _ = provider(tmp_path)
    with pytest.raises(ProviderError) as info:
        p.reset(LAB.scenario("healthy"))
    assert str(info.value).startswith(
        "vagrant found no usable hypervisor provider: install VirtualBox"
    )
    assert fake_vagrant.calls() == [["status", "--machine-readable"]]


def test_missing_box(fake_vagrant: FakeVagrant, tmp_path: Path) -> None:
    fake_vagrant.knob("box_missing")
    p, _ = provider(tmp_path)
    with pytest.raises(ProviderError) as info:
        p.reset(LAB.scenario("healthy"))
    assert str(info.value) == (
        "the vagrant box 'rdplab/windows-11' is missing: vagrant box add rdplab/windows-11"
        " (or build it; see the Vagrantfile)"
    )
    never_rebuilds(fake_vagrant.calls())


def test_machine_not_created(fake_vagrant: FakeVagrant, tmp_path: Path) -> None:
    fake_vagrant.knob("up_does_nothing")
    p, _ = provider(tmp_path)
    with pytest.raises(ProviderError) as info:
        p.reset(LAB.scenario("healthy"))
    assert str(info.value) == (
        f"machine client (client) is not created after vagrant up; run `vagrant up client`"
        f" in {tmp_path / 'project'} and read its output"
    )


def test_vagrantfile_without_the_host_machine(fake_vagrant: FakeVagrant, tmp_path: Path) -> None:
    state = fake_vagrant.state
    del state["machines"]["host"]
    fake_vagrant.set_state(state)
    p, _ = provider(tmp_path)
    with pytest.raises(ProviderError) as info:
        p.reset(LAB.scenario("healthy"))
    assert str(info.value) == (
        f"the Vagrantfile in {tmp_path / 'project'} defines no machine 'host' for the host"
        " (it defines: client)"
    )


def test_no_vagrantfile(fake_vagrant: FakeVagrant, tmp_path: Path) -> None:
    p = VagrantProvider(root=tmp_path)
    with pytest.raises(ProviderError, match=r"^no Vagrantfile in "):
        p.reset(LAB.scenario("healthy"))


def test_bad_teardown_option(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="--lab-teardown must be one of none, halt, destroy"):
        VagrantProvider(root=tmp_path, teardown="explode")


def test_selected_by_name_with_plugin_options(tmp_path: Path) -> None:
    p = get_provider("vagrant", root=tmp_path, teardown="destroy", inventory=tmp_path / "x")
    assert isinstance(p, VagrantProvider) and p.teardown == "destroy" and p.root == tmp_path


@pytest.mark.real_windows
def test_vagrant_lab_on_real_vms() -> None:
    """The healthy scenario on the repo's Vagrant VMs, when RDPLAB_VAGRANT=1 says they
    may be used (this brings them up and snapshots them the first time)."""
    if os.environ.get("RDPLAB_VAGRANT") != "1":
        pytest.skip("needs real Windows VMs: set RDPLAB_VAGRANT=1 with VirtualBox and the boxes")
    p = VagrantProvider(root=REPO)
    try:
        run = run_scenario(p, LAB.scenario("healthy"))
    finally:
        p.close()
    assert run.error is None, f"{run.failed_step}: {run.error}"
    assert run.connection is not None and run.connection.ok, run.connection


# -- the router (RDPLAB_ROUTER=1): a Debian gateway over SSH ------------------------------------
NET_LAB = load_lab(REPO / "labs" / "network.yaml")
LEARN = ["ssh", "router", "-c", "cat /etc/ssh/ssh_host_ed25519_key.pub /etc/rdplab/router.env"]

ROUTER_FAKE = r'''#!{python}
"""The fake vagrant, plus the router's ssh-config and ssh -c; the rest: vagrant-base."""
import json, os, sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
args = sys.argv[1:]
if args[:1] in (["ssh-config"], ["ssh"]) and args[1:2] == ["router"]:
    r = json.loads((HERE / "router.json").read_text())
    with (HERE / "calls.log").open("a") as log:
        log.write(json.dumps(args) + "\n")
    if args[0] == "ssh-config":
        print("Host router")
        print("  HostName 127.0.0.1")
        print(f"  User {{r['user']}}")
        print(f"  Port {{r['port']}}")
        print("  UserKnownHostsFile /dev/null")
        print("  StrictHostKeyChecking no")
        print("  PasswordAuthentication no")
        print(f'  IdentityFile "{{r["key"]}}"')
        print("  IdentitiesOnly yes")
        print("  LogLevel FATAL")
    else:
        print(r["host_key"])
        if r.get("env", True):
            print(f"lan_interface={{r['lan']}}")
            print(f"outside_interface={{r['outside']}}")
        print("Connection to 127.0.0.1 closed.", file=sys.stderr)
    sys.exit(0)
os.execv(sys.executable, [sys.executable, str(HERE / "vagrant-base"), *args])
'''


def install_router_fake(
    fake: FakeVagrant, info: dict[str, Any], state: str = "not_created"
) -> None:
    """The fake also answers for a Vagrantfile ``router`` machine, described by ``info``."""
    exe = fake.dir / "vagrant"
    exe.rename(fake.dir / "vagrant-base")
    exe.write_text(ROUTER_FAKE.format(python=sys.executable))
    exe.chmod(0o755)
    (fake.dir / "router.json").write_text(json.dumps(info))
    doc = fake.state
    doc["machines"]["router"] = {"state": state, "snapshots": [], "box": "debian/bookworm64"}
    fake.set_state(doc)


@pytest.mark.winrm_loopback
@pytest.mark.ssh_loopback
@pytest.mark.netns
def test_router_from_vagrant_ssh_config(
    fake_vagrant: FakeVagrant,
    vms: dict[str, Responder],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scenario with a router: the router VM is brought up, reached where `vagrant
    ssh-config router` says, its host key learned once; every reset brings its rules back
    in one SSH command and no vagrant command. The router is a real sshd whose commands
    run in a lab router namespace (tests/loopback/test_router_ssh.py)."""
    from rdplab import testinfra_hosts
    from rdplab.backends.router_ssh import SSHRouterBackend
    from rdplab.ops import Op

    from .test_router_ssh import router_lab

    with router_lab(tmp_path / "router") as lab:
        server = lab.server
        install_router_fake(
            fake_vagrant,
            {
                "user": server.user,
                "port": server.port,
                "key": str(server.client_key),
                "host_key": server.host_key_line,
                "lan": lab.lan_interface,
                "outside": lab.outside_interface,
            },
        )
        lab.provision_forward()  # what vagrant/provision/router.sh leaves
        for r in vms.values():
            r.install_agent()  # provisioned VMs: the agent is there (no upload to wait for)
        monkeypatch.setenv("RDPLAB_ROUTER", "1")
        p, progress = provider(tmp_path)
        scenario = p.place(NET_LAB.scenario("port-forward-missing"))
        assert scenario.network.router is not None
        assert (scenario.network.router.lan_address, scenario.network.router.outside_address) == (
            "192.168.56.2",
            "203.0.113.2",
        )
        try:
            machines = p.reset(scenario)
            assert fake_vagrant.calls()[-4:] == [
                ["status", "--machine-readable"],
                ["up", "router"],
                ["ssh-config", "router"],
                LEARN,
            ]
            router = machines.router
            assert isinstance(router, SSHRouterBackend) and router.sudo
            assert router.client_link == lab.outside_interface
            known = tmp_path / "project" / ".vagrant" / "rdplab" / "router_known_hosts"
            key = " ".join(server.host_key_line.split()[:2])
            assert known.read_text() == f"[127.0.0.1]:{server.port} {key}\n"
            healthy = p.router_base  # its snapshot at the first reset: its baseline
            assert healthy is not None
            assert healthy["forwards"] == {
                "3389": {"port": 3389, "to": "192.168.56.11", "to_port": 3389}
            }
            assert healthy["addresses"] == {"lan": "192.168.56.1", "outside": "203.0.113.1"}
            assert router.apply([Op("fwd.remove", {"port": 3389})]).changes == 1

            fake_vagrant.clear()
            again = p.reset(scenario)
            assert fake_vagrant.calls() == [
                ["snapshot", "restore", "client", "baseline", "--no-provision"],
                ["snapshot", "restore", "host", "baseline", "--no-provision"],
            ]  # the router: one SSH command, no vagrant
            assert again.router is router
            rules = testinfra_hosts.router_rules(p.testinfra_host("router"))
            assert rules["forwards"] == healthy["forwards"]  # back, seen over testinfra
        finally:
            p.close()
        assert "rdplab: vagrant up router (the first time this takes a while)" in progress


def test_router_scenario_needs_rdplab_router(
    fake_vagrant: FakeVagrant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RDPLAB_ROUTER", raising=False)
    p, _ = provider(tmp_path)
    scenario = NET_LAB.scenario("port-forward-missing")
    assert p.place(scenario) is scenario  # no router VM: the lab file's addresses stay
    assert p.testinfra_host("router") is None
    with pytest.raises(ProviderError) as info:
        p.router_machine(scenario)
    assert str(info.value) == (
        "scenario port-forward-missing has a router (network.router in its lab file): bring"
        f" up the Vagrantfile's router with RDPLAB_ROUTER=1 vagrant up router in"
        f" {tmp_path / 'project'}, and run with RDPLAB_ROUTER=1 set (docs/vagrant.md, The"
        " router)"
    )
    assert fake_vagrant.calls() == []


def test_router_is_pair_zero_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RDPLAB_ROUTER", "1")
    p, _ = provider(tmp_path, worker=1)
    with pytest.raises(ProviderError, match="the Vagrantfile's router belongs to pair 0; worker 1"):
        p.router_machine(NET_LAB.scenario("port-forward-missing"))


def test_router_without_its_provisioning_says_so(
    fake_vagrant: FakeVagrant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = {"user": "vagrant", "port": 2200, "key": "/k", "host_key": "ssh-ed25519 AAAAC3 x"}
    install_router_fake(fake_vagrant, {**info, "env": False}, state="running")
    monkeypatch.setenv("RDPLAB_ROUTER", "1")
    p, _ = provider(tmp_path)
    with pytest.raises(ProviderError) as err:
        p.router_machine(NET_LAB.scenario("port-forward-missing"))
    assert str(err.value) == (
        "the router VM did not show the interfaces in /etc/rdplab/router.env; provision it"
        f" again: RDPLAB_ROUTER=1 vagrant provision router (in {tmp_path / 'project'})"
    )
    assert fake_vagrant.calls() == [
        ["status", "--machine-readable"],
        ["ssh-config", "router"],
        LEARN,
    ]  # running: not brought up again
