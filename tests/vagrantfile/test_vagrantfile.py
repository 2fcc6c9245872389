"""The Vagrantfile, checked by the real ``vagrant`` binary and Vagrant's own Ruby API.

Nothing here boots a machine (no hypervisor, no Windows). Two real checks run instead, each
on a copy of the project in tmp_path with VAGRANT_HOME in tmp_path, so nothing is written to
the repository:

1. ``vagrant validate --ignore-provider``: every non-provider setting of both machines,
   through Vagrant's own validators (box, hostname, networks, WinRM, provisioners and the
   scripts they name). Debian's vagrant lacks the ``winrm`` gem and dies with LoadError as
   soon as it builds a WinRM machine (``test_validate_without_the_winrm_gem``), so the
   stand-in in vagrant/validate/winrm-stub goes on Ruby's load path: it defines the
   constants the communicator names at load time and raises on any connection.
2. vagrant/validate/dump_config.rb, run by vagrant's own Ruby: loads the Vagrantfile with
   ``Vagrant::Environment`` and ``Vagrantfile#machine_config`` for every machine and provider
   (virtualbox, hyperv, libvirt; none installed), runs each provider config's own
   ``validate`` and prints the resolved settings as JSON for the assertions below.

With ``RDPLAB_ROUTER=1`` the Vagrantfile also defines ``router``, a Debian NAT gateway over
SSH; its configuration is checked the same way, and its provisioning script with ``bash -n``
(the script's forward itself runs in a network namespace in tests/loopback/test_router_ssh.py).

docs/vagrant.md says what only a real hypervisor and review can prove.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from rdplab import export_router
from rdplab import workers as workers_mod
from rdplab.agent import AGENT_DIR
from rdplab.lab import load_lab
from rdplab.providers.vagrant import ROUTER_LAN_ADDRESS, ROUTER_OUTSIDE_ADDRESS, ROUTER_VM

pytestmark = pytest.mark.vagrantfile

REPO = Path(__file__).resolve().parents[2]
VALIDATE_DIR = REPO / "vagrant" / "validate"
STUB_DIR = VALIDATE_DIR / "winrm-stub"
DUMP_SCRIPT = VALIDATE_DIR / "dump_config.rb"
LAB_FILE = REPO / "labs" / "rdp-0x904.yaml"
BASELINE_DIR = REPO / "fixtures" / "baselines"
AGENT_SOURCE = REPO / "src" / "rdplab" / "agent" / "agent.ps1"
PROVISION_SCRIPTS = sorted((REPO / "vagrant" / "provision").glob("*.ps1"))
ROUTER_SCRIPT = REPO / "vagrant" / "provision" / "router.sh"
NETWORK_LAB = REPO / "labs" / "network.yaml"

PROVIDERS = ("virtualbox", "hyperv", "libvirt")
MACHINES = ("client", "host")
# Host ports Vagrant forwards by itself (kernel_v2 VM config: winrm, winrm-ssl, ssh) and
# the one gusztavvargadr's boxes forward in their own Vagrantfile (rdp).
VAGRANT_DEFAULT_HOST_PORTS = {55985: "winrm", 55986: "winrm-ssl", 2222: "ssh", 53389: "rdp"}
GUEST_PORTS = {"winrm": 5985, "winrm-ssl": 5986, "rdp": 3389, "ssh": 22}
TIMEOUT = 120

Dump = dict[str, Any]
Env = Mapping[str, str]


@dataclass(frozen=True)
class Vagrant:
    """The real vagrant binary and the Ruby it runs on."""

    binary: str
    ruby: str
    winrm_gem: bool  # False on Debian: the stand-in goes on the load path

    def env(
        self, home: Path, cwd: Path, extra: Env | None = None, stub: bool = True
    ) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RDPLAB_", "VAGRANT_")) and k not in ("RUBYOPT", "RUBYLIB")
        }
        env.update(
            VAGRANT_HOME=str(home),
            VAGRANT_CWD=str(cwd),
            VAGRANT_CHECKPOINT_DISABLE="1",
            VAGRANT_NO_COLOR="1",
        )
        if stub and not self.winrm_gem:
            env["RUBYOPT"] = f"-I{STUB_DIR}"
        env.update(extra or {})
        return env

    def run(
        self, *args: str, project: Path, home: Path, extra: Env | None = None, stub: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args],
            cwd=project,
            env=self.env(home, project, extra, stub),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def dump(self, project: Path, home: Path, extra: Env | None = None, *providers: str) -> Dump:
        proc = subprocess.run(
            [self.ruby, str(DUMP_SCRIPT), *providers],
            cwd=project,
            env=self.env(home, project, extra, stub=False),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert proc.returncode == 0, f"dump_config.rb failed:\n{proc.stderr}"
        doc: Dump = json.loads(proc.stdout)
        return doc


def _ruby_of(binary: str) -> str | None:
    """The Ruby the vagrant launcher runs on: its shebang (Debian), or HashiCorp's embedded."""
    with open(binary, "rb") as fh:
        first = fh.readline().decode(errors="replace").strip()
    if first.startswith("#!") and "ruby" in first:
        parts = first[2:].split()
        return shutil.which(parts[-1]) if parts[0].endswith("/env") else parts[0]
    embedded = Path("/opt/vagrant/embedded/bin/ruby")
    return str(embedded) if embedded.exists() else None


@pytest.fixture(scope="session")
def vagrant() -> Vagrant:
    binary = shutil.which("vagrant")
    if binary is None:
        pytest.skip("vagrant is not on PATH: install Debian's `vagrant` package (.ci/run does)")
    ruby = _ruby_of(binary)
    if ruby is None:
        pytest.skip(f"cannot find the Ruby that {binary} runs on (not Debian's vagrant package?)")
    probe = subprocess.run(
        [ruby, "-e", 'require "winrm"'], capture_output=True, timeout=TIMEOUT, check=False
    )
    return Vagrant(binary, ruby, probe.returncode == 0)


def copy_project(dest: Path) -> Path:
    """What the Vagrantfile reads: itself, vagrant/, the baselines and the agent."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "Vagrantfile", dest / "Vagrantfile")
    shutil.copytree(REPO / "vagrant", dest / "vagrant")
    shutil.copytree(BASELINE_DIR, dest / "fixtures" / "baselines")
    agent = dest / "src" / "rdplab" / "agent" / "agent.ps1"
    agent.parent.mkdir(parents=True)
    if AGENT_SOURCE.exists():
        shutil.copy2(AGENT_SOURCE, agent)
    else:  # test_agent_source_is_in_the_repo reports it; the rest can still be checked
        agent.write_text("# placeholder: src/rdplab/agent/agent.ps1 is not in the repo yet\n")
    return dest


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vagrant-home")


def edited(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the project whose Vagrantfile has ``old`` replaced by ``new``."""
    copy = copy_project(tmp_path / "project")
    vf = copy / "Vagrantfile"
    text = vf.read_text()
    assert old in text, f"the Vagrantfile no longer contains {old!r}; update this test"
    vf.write_text(text.replace(old, new, 1))
    return copy


# -- configurations: each dumped once per module --------------------------------------------

OVERRIDES = {
    "RDPLAB_MEMORY": "6144",
    "RDPLAB_CPUS": "4",
    "RDPLAB_CLIENT_BOX": "example/win11-custom",
    "RDPLAB_CLIENT_BOX_VERSION": "1.2.3",
    "RDPLAB_HOST_BOX": "example/ws2022-custom",
    "RDPLAB_HOST_BOX_VERSION": ">= 2402, < 2500",
    "RDPLAB_VAGRANT_USERNAME": "labadmin",
    "RDPLAB_VAGRANT_PASSWORD": "S3cret-for-test",
}
CONFIGS: dict[str, dict[str, str]] = {
    "default": {},
    "overrides": OVERRIDES,
    "unpatched": {"RDPLAB_HOST_VARIANT": "unpatched"},
    "router": {"RDPLAB_ROUTER": "1"},
}


@pytest.fixture(scope="module")
def dumps(vagrant: Vagrant, project: Path, home: Path) -> Callable[[str], Dump]:
    cache: dict[str, Dump] = {}

    def get(name: str) -> Dump:
        if name not in cache:
            cache[name] = vagrant.dump(project, home, CONFIGS[name])
        return cache[name]

    return get


@pytest.fixture(scope="module")
def default(dumps: Callable[[str], Dump]) -> Dump:
    return dumps("default")


def each(doc: Dump) -> Iterator[tuple[str, str, Dump]]:
    for machine in MACHINES:
        for provider in PROVIDERS:
            yield machine, provider, doc["machines"][machine][provider]


def forwards(m: Dump, enabled_only: bool = True) -> list[Dump]:
    return [
        n
        for n in m["networks"]
        if n["type"] == "forwarded_port" and not (enabled_only and n.get("disabled"))
    ]


def lab_network() -> dict[str, Any]:
    """The lab file's network, with rdplab's defaults for what it leaves out."""
    return dataclasses.asdict(load_lab(LAB_FILE).scenarios[0].network)


def without_ids(m: Dump) -> list[Dump]:
    """The networks without the random id Vagrant gives a private network."""
    return [
        {k: v for k, v in n.items() if n["type"] == "forwarded_port" or k != "id"}
        for n in m["networks"]
    ]


def baseline_arg(m: Dump) -> dict[str, Any]:
    args = provisioner(m, "baseline")["args"]
    spec: dict[str, Any] = json.loads(
        base64.b64decode(args[args.index("-BaselineJson64") + 1]).decode()
    )
    return spec


def provisioner(m: Dump, name: str) -> Dump:
    found: list[Dump] = [p for p in m["provisioners"] if p["name"] == name]
    assert len(found) == 1, f"expected one provisioner {name!r}, got {m['provisioners']}"
    return found[0]


# -- vagrant validate ------------------------------------------------------------------------


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_vagrant_validate_passes(vagrant: Vagrant, project: Path, home: Path, config: str) -> None:
    proc = vagrant.run(
        "validate", "--ignore-provider", project=project, home=home, extra=CONFIGS[config]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Vagrantfile validated successfully." in proc.stdout
    for machine in MACHINES:
        assert f"==> {machine}: Ignoring provider config for validation" in proc.stdout
    assert not (REPO / ".vagrant").exists()


def test_validate_without_the_winrm_gem(vagrant: Vagrant, project: Path, home: Path) -> None:
    """What Debian's vagrant does with a WinRM Vagrantfile on its own: the reason for the stub."""
    proc = vagrant.run("validate", "--ignore-provider", project=project, home=home, stub=False)
    if vagrant.winrm_gem:  # a vagrant that ships the gem validates without help
        assert proc.returncode == 0, proc.stderr
        assert "Vagrantfile validated successfully." in proc.stdout
    else:
        assert proc.returncode != 0
        assert "cannot load such file -- winrm (LoadError)" in proc.stderr
        assert "plugins/communicators/winrm" in proc.stderr


def test_validate_needs_a_usable_provider(vagrant: Vagrant, project: Path, home: Path) -> None:
    proc = vagrant.run("validate", project=project, home=home)
    if shutil.which("VBoxManage") is None:
        assert proc.returncode != 0
        assert "No usable default provider could be found for your system." in proc.stderr
    else:  # with VirtualBox, the provider config is validated too
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ("virtualbox", "Vagrant could not detect VirtualBox!"),
        ("hyperv", "The Hyper-V provider only works on Windows."),
        ("libvirt", "could not be found|isn't usable"),
    ],
)
def test_status_names_the_missing_provider(
    vagrant: Vagrant, tmp_path: Path, provider: str, message: str
) -> None:
    if provider == "virtualbox" and shutil.which("VBoxManage"):
        pytest.skip("VirtualBox is installed here; status would query it")
    copy = copy_project(tmp_path / "project")
    home = tmp_path / "home"
    proc = vagrant.run(
        "status", project=copy, home=home, extra={"VAGRANT_DEFAULT_PROVIDER": provider}
    )
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert f"The provider '{provider}'" in out
    assert re.search(message, out), out
    assert "Traceback" not in out and "LoadError" not in out
    assert not any((home / "boxes").glob("*")), "status must not fetch a box"


def test_validate_fails_on_a_syntax_error(vagrant: Vagrant, tmp_path: Path) -> None:
    copy = edited(tmp_path, "machines.each do |name, m|", "machines.each do |name, m")
    proc = vagrant.run("validate", "--ignore-provider", project=copy, home=tmp_path / "home")
    assert proc.returncode != 0
    assert "There is a syntax error in the following Vagrantfile." in proc.stderr
    assert str(copy / "Vagrantfile") in proc.stderr


def test_validate_checks_winrm_settings(vagrant: Vagrant, tmp_path: Path) -> None:
    copy = edited(
        tmp_path,
        "config.winrm.password = winrm_password",
        "config.winrm.password = nil",
    )
    proc = vagrant.run("validate", "--ignore-provider", project=copy, home=tmp_path / "home")
    assert proc.returncode != 0
    assert "WinRM:" in proc.stderr
    assert "winrm.password cannot be nil." in proc.stderr


def test_validate_fails_on_a_missing_provision_script(vagrant: Vagrant, tmp_path: Path) -> None:
    copy = copy_project(tmp_path / "project")
    (copy / "vagrant" / "provision" / "baseline.ps1").unlink()
    proc = vagrant.run("validate", "--ignore-provider", project=copy, home=tmp_path / "home")
    assert proc.returncode != 0
    assert "shell provisioner:" in proc.stderr
    assert "vagrant/provision/baseline.ps1" in proc.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RDPLAB_HOST_VARIANT", "bogus"),
        ("RDPLAB_MEMORY", "lots"),
        ("RDPLAB_CPUS", "0"),
        ("RDPLAB_WORKER", "8"),
        ("RDPLAB_ROUTER", "yes"),
        ("RDPLAB_ROUTER_MEMORY", "half"),
    ],
)
def test_bad_settings_fail_with_their_name(
    vagrant: Vagrant, project: Path, home: Path, name: str, value: str
) -> None:
    proc = vagrant.run(
        "validate", "--ignore-provider", project=project, home=home, extra={name: value}
    )
    assert proc.returncode != 0
    err = " ".join(proc.stderr.split())
    assert "There was an error loading a Vagrantfile." in err
    assert f"rdplab Vagrantfile: {name} must be" in err
    assert f'got "{value}"' in err
    assert "Traceback" not in err


# -- the resolved configuration ---------------------------------------------------------------


def test_machines_boxes_and_primary(default: Dump) -> None:
    assert sorted(default["machine_names"]) == sorted(MACHINES)
    assert default["primary"] == "host"
    boxes = {
        "client": "gusztavvargadr/windows-11",
        "host": "gusztavvargadr/windows-server-2022-standard",
    }
    for machine, _provider, m in each(default):
        assert m["box"] == boxes[machine]
        assert m["box_version"] is None  # the newest unless RDPLAB_*_BOX_VERSION pins one
        assert m["hostname"] == machine
        assert m["config_errors"] == [] and m["config_warnings"] == []


def test_winrm_communicator(default: Dump) -> None:
    vagrant_sha = hashlib.sha256(b"vagrant").hexdigest()
    for _machine, _provider, m in each(default):
        assert m["communicator"] == "winrm"
        assert m["guest"] == "windows"
        w = m["winrm"]
        assert w["username"] == "vagrant"
        assert w["password_sha256"] == vagrant_sha
        assert w["transport"] == "negotiate"
        assert w["basic_auth_only"] is False
        assert w["guest_port"] == 5985
        assert w["errors"] == []
        # the communicator reaches the guest's WinRM through the forward for guest 5985
        assert [f["guest"] for f in forwards(m)].count(w["guest_port"]) == 1


def test_private_addresses_match_the_lab_file(default: Dump) -> None:
    net = lab_network()
    want = {"client": net["client_address"], "host": net["host_address"]}
    assert want == {"client": "192.168.56.10", "host": "192.168.56.11"}
    for machine, _provider, m in each(default):
        private = [n for n in m["networks"] if n["type"] == "private_network"]
        assert [n["ip"] for n in private] == [want[machine]]


def test_forwarded_ports(default: Dump) -> None:
    for _machine, _provider, m in each(default):
        fw = {f["id"]: f for f in forwards(m)}
        assert sorted(fw) == sorted(GUEST_PORTS)
        for fid, f in fw.items():
            assert f["guest"] == GUEST_PORTS[fid]
            assert f["host_ip"] == "127.0.0.1"
            assert f["auto_correct"] is True
            assert f["protocol"] == "tcp"
        # the box's own 3389 -> 53389 forward is switched off
        off = [f for f in forwards(m, enabled_only=False) if f.get("disabled")]
        assert [(f["id"], f["host"]) for f in off] == [("tcp53389", 53389)]


def test_port_tables_match(default: Dump) -> None:
    """The port map in the Vagrantfile's header and in docs/vagrant.md is the real one."""
    order = ("winrm", "winrm-ssl", "rdp", "ssh")
    real = {
        machine: tuple(
            {f["id"]: f["host"] for f in forwards(default["machines"][machine]["virtualbox"])}[i]
            for i in order
        )
        for machine in MACHINES
    }
    tables = {
        "Vagrantfile": (
            REPO / "Vagrantfile",
            r"^#\s+(host|client)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$",
        ),
        "docs/vagrant.md": (
            REPO / "docs" / "vagrant.md",
            r"^\| (host|client) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$",
        ),
    }
    for name, (path, pattern) in tables.items():
        rows = re.findall(pattern, path.read_text(), flags=re.M)
        table = {row[0]: tuple(int(p) for p in row[1:]) for row in rows}
        assert table == real, f"{name}: port table {table} != resolved {real}"


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_no_port_collisions(dumps: Callable[[str], Dump], config: str) -> None:
    doc = dumps(config)
    for provider in PROVIDERS:
        owner: dict[int, str] = {}
        for machine in doc["machine_names"]:  # the router too, with RDPLAB_ROUTER=1
            for f in forwards(doc["machines"][machine][provider]):
                port = f["host"]
                assert port not in VAGRANT_DEFAULT_HOST_PORTS, (
                    f"{machine}/{provider}: {f['id']} uses {port}, Vagrant's default for "
                    f"{VAGRANT_DEFAULT_HOST_PORTS[port]}"
                )
                assert port not in owner, f"{provider}: {port} on {owner.get(port)} and {machine}"
                owner[port] = f"{machine}:{f['id']}"
        router = 1 if "router" in doc["machine_names"] else 0  # its ssh forward only
        assert len(owner) == len(MACHINES) * len(GUEST_PORTS) + router


def _vbox_resources(m: Dump) -> tuple[int, int]:
    custom = m["provider"]["settings"]["customizations"]
    modify = [c[1] for c in custom if c[0] == "pre-boot" and c[1][0] == "modifyvm"]
    memory = [int(c[3]) for c in modify if c[2] == "--memory"]
    cpus = [int(c[3]) for c in modify if c[2] == "--cpus"]
    return memory[-1], cpus[-1]  # the last customization wins in VBoxManage


def _resources(m: Dump, provider: str) -> tuple[int, int]:
    if provider == "virtualbox":
        return _vbox_resources(m)
    s = m["provider"]["settings"]
    return int(s["memory"]), int(s["cpus"])


@pytest.mark.parametrize(
    ("config", "memory", "cpus"), [("default", 4096, 2), ("overrides", 6144, 4)]
)
def test_provider_resources_and_linked_clones(
    dumps: Callable[[str], Dump], config: str, memory: int, cpus: int
) -> None:
    for machine, provider, m in each(dumps(config)):
        p = m["provider"]
        assert p["errors"] == [], f"{machine}/{provider}: {p['errors']}"
        assert _resources(m, provider) == (memory, cpus), f"{machine}/{provider}"
        s = p["settings"]
        if provider == "virtualbox":
            assert s["linked_clone"] is True
            assert s["name"] == f"rdplab-{machine}"
        elif provider == "hyperv":
            assert s["linked_clone"] is True and s["differencing_disk"] is True
            assert s["vmname"] == f"rdplab-{machine}"
        else:  # the libvirt block is real config once vagrant-libvirt is installed
            assert p["config_class"] in (
                "Vagrant::Config::V2::DummyConfig",
                "VagrantPlugins::ProviderLibvirt::Config",
            )
            assert s["machine_type"] == "q35"


def test_env_overrides(dumps: Callable[[str], Dump]) -> None:
    doc = dumps("overrides")
    secret_sha = hashlib.sha256(OVERRIDES["RDPLAB_VAGRANT_PASSWORD"].encode()).hexdigest()
    assert OVERRIDES["RDPLAB_VAGRANT_PASSWORD"] not in json.dumps(doc)
    for machine, _provider, m in each(doc):
        prefix = "RDPLAB_CLIENT" if machine == "client" else "RDPLAB_HOST"
        assert m["box"] == OVERRIDES[f"{prefix}_BOX"]
        assert m["box_version"] == OVERRIDES[f"{prefix}_BOX_VERSION"]
        assert m["winrm"]["username"] == "labadmin"
        assert m["winrm"]["password_sha256"] == secret_sha


def test_unpatched_variant(dumps: Callable[[str], Dump], default: Dump) -> None:
    doc = dumps("unpatched")
    for provider in PROVIDERS:
        host = doc["machines"]["host"][provider]
        assert host["box"] == "StefanScherer/windows_2016"
        assert host["box_version"] == "2017.12.14"  # built before the May 2018 update
        assert baseline_arg(host)["baseline"] == "windows-server-2016-1607"
        args = provisioner(host, "baseline")["args"]
        assert "-HoldUpdates" in args and "-ExpectUnpatchedCredSSP" in args
        # the client does not change, nor does the host's place in the network
        client = doc["machines"]["client"][provider]
        assert without_ids(client) == without_ids(default["machines"]["client"][provider])
        assert client["box"] == default["machines"]["client"][provider]["box"]
        assert without_ids(host) == without_ids(default["machines"]["host"][provider])
    patched = default["machines"]["host"]["virtualbox"]
    assert "-HoldUpdates" not in provisioner(patched, "baseline")["args"]


def test_provisioners_reference_existing_scripts(default: Dump) -> None:
    for _machine, _provider, m in each(default):
        assert [p["name"] for p in m["provisioners"]] == [
            "agent-upload",
            "install-agent",
            "baseline",
        ]
        assert not any(p["invalid"] for p in m["provisioners"])
        upload, install, base = m["provisioners"]
        assert upload["type"] == "file"
        assert upload["source"] == "src/rdplab/agent/agent.ps1"
        # install-agent picks the file up where the upload left it
        destination = upload["destination"].replace("/", "\\")
        assert install["args"] == ["-Source", destination]
        for shell in (install, base):
            assert shell["type"] == "shell" and shell["privileged"] is True
            assert (REPO / shell["path"]).is_file(), shell["path"]
            assert shell["path_exists"] is True
    assert not any(f.name == "agent.ps1" for f in PROVISION_SCRIPTS), "agent.ps1 lives in src/"


def test_agent_source_is_in_the_repo() -> None:
    assert AGENT_SOURCE.is_file(), (
        f"{AGENT_SOURCE.relative_to(REPO)} is missing: the Vagrantfile's agent-upload "
        "provisioner copies it to every machine"
    )


def test_install_agent_path_matches_the_agent_module() -> None:
    text = (REPO / "vagrant" / "provision" / "install-agent.ps1").read_text()
    m = re.search(r"\[string\] \$AgentDir = '([^']+)'", text)
    assert m is not None
    assert m.group(1) == AGENT_DIR
    assert "Join-Path $AgentDir 'agent.ps1'" in text


@pytest.mark.parametrize("machine", MACHINES)
def test_baseline_args_come_from_the_baseline_file(default: Dump, machine: str) -> None:
    m = default["machines"][machine]["virtualbox"]
    spec = baseline_arg(m)
    name = {"client": "windows-11", "host": "windows-server-2022"}[machine]
    assert spec["baseline"] == name
    base = yaml.safe_load((BASELINE_DIR / f"{name}.yaml").read_text())
    ts = r"HKLM\SYSTEM\CurrentControlSet\Control\Terminal Server"
    rdp = ts + r"\WinStations\RDP-Tcp"
    assert spec["registry"][ts]["fDenyTSConnections"] == {"type": "REG_DWORD", "data": 0}
    for value in ("UserAuthentication", "SecurityLayer"):  # NLA and TLS, as the baseline says
        assert spec["registry"][rdp][value] == base["registry"][rdp][value]
    assert spec["registry"][rdp]["PortNumber"]["data"] == lab_network()["port"]
    assert not any("MSLicensing" in key for key in spec["registry"])
    rules = {r["name"]: r["enabled"] for r in spec["firewall_rules"]}
    assert rules == {r["name"]: r["enabled"] for r in base["firewall"]["rules"]}
    assert rules["RemoteDesktop-UserMode-In-TCP"] is True
    assert spec["services"]["TermService"] == base["services"]["TermService"]
    assert spec["services"]["TermService"]["status"] == "Running"
    assert spec["network_category"] == base["firewall"]["active_profile"]


def test_lab_zone_records(default: Dump) -> None:
    net = lab_network()
    host = provisioner(default["machines"]["host"]["virtualbox"], "baseline")["args"]
    client = provisioner(default["machines"]["client"]["virtualbox"], "baseline")["args"]
    records = dict(pair.split("=") for pair in host[host.index("-ZoneRecords") + 1].split(","))
    zone = host[host.index("-Zone") + 1]
    want = {net[f"{role}_name"]: net[f"{role}_address"] for role in ("host", "client", "pki")}
    assert {f"{name}.{zone}": address for name, address in records.items()} == want
    assert "-Zone" not in client  # only the host serves the zone
    for args in (host, client):
        assert args[args.index("-DnsServer") + 1] == net["host_address"]


def test_provider_typo_is_caught(vagrant: Vagrant, tmp_path: Path) -> None:
    """The dump runs each provider config's validate, which `validate -p` skips."""
    copy = edited(
        tmp_path, "vb.linked_clone = true", "vb.linked_clone = true\n        vb.memmory = 1"
    )
    m = vagrant.dump(copy, tmp_path / "home", {}, "virtualbox")["machines"]["host"]["virtualbox"]
    assert any("memmory" in e for e in m["provider"]["errors"]), m["provider"]["errors"]


# A box's own Vagrantfile, shaped like gusztavvargadr's: the RDP forward either at the top
# or in a provider override, and its own cpus/memory.
BOX_VAGRANTFILES = {
    "top-level": """
Vagrant.configure(2) do |config|
  config.vm.guest = :windows
  config.vm.communicator = "winrm"
  config.vm.provider "virtualbox" do |vb|
    vb.cpus = 1
    vb.memory = 1024
  end
  config.vm.network :forwarded_port, guest: 3389, host: 53389, auto_correct: true
end
""",
    "override": """
Vagrant.configure(2) do |config|
  config.vm.guest = :windows
  config.vm.communicator = "winrm"
  config.vm.provider "virtualbox" do |vb, override|
    vb.cpus = 1
    vb.memory = 1024
    override.vm.network :forwarded_port, guest: 3389, host: 53389, auto_correct: true
    override.vm.network :forwarded_port, guest: 5985, host: 55985, id: "winrm", auto_correct: true
  end
end
""",
}


@pytest.mark.parametrize("style", sorted(BOX_VAGRANTFILES))
def test_box_vagrantfile_does_not_move_the_ports(
    vagrant: Vagrant, project: Path, tmp_path: Path, style: str
) -> None:
    home = tmp_path / "home"
    box = "gusztavvargadr/windows-server-2022-standard".replace("/", "-VAGRANTSLASH-")
    boxdir = home / "boxes" / box / "2402.0.0" / "virtualbox"
    boxdir.mkdir(parents=True)
    (boxdir / "metadata.json").write_text('{"provider": "virtualbox"}')
    (boxdir / "Vagrantfile").write_text(BOX_VAGRANTFILES[style])
    doc = vagrant.dump(project, home, {}, "virtualbox")
    host = doc["machines"]["host"]["virtualbox"]
    assert host["box_found"] == "gusztavvargadr/windows-server-2022-standard 2402.0.0 (virtualbox)"
    fw = {f["id"]: f["host"] for f in forwards(host)}
    assert fw == {"winrm": 45985, "winrm-ssl": 45986, "rdp": 43389, "ssh": 45022}
    assert _vbox_resources(host) == (4096, 2)
    assert host["provider"]["errors"] == []


# -- one client/host pair per pytest-xdist worker (docs/scale.md) ---------------------------


@pytest.fixture(scope="module")
def pair_dumps(vagrant: Vagrant, project: Path, home: Path) -> Callable[[int], Dump]:
    """The Vagrantfile as worker ``N``'s vagrant commands load it (``RDPLAB_WORKER=N``)."""
    cache: dict[int, Dump] = {}

    def get(worker: int) -> Dump:
        if worker not in cache:
            cache[worker] = vagrant.dump(project, home, {"RDPLAB_WORKER": str(worker)})
        return cache[worker]

    return get


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_worker_pairs_coexist(pair_dumps: Callable[[int], Dump], workers: int) -> None:
    """N workers' pairs on one hypervisor: machine names, VM names, private addresses and
    forwarded ports all distinct, and each pair where rdplab.workers says it is."""
    base = {"host": (45985, 45986, 43389, 45022), "client": (46985, 46986, 44389, 46022)}
    for provider in PROVIDERS:
        seen: dict[str, set[Any]] = {"vm": set(), "hv": set(), "ip": set(), "port": set()}
        for w in range(workers):
            doc = pair_dumps(w)
            names = workers_mod.vagrant_machines(w)
            assert sorted(doc["machine_names"]) == sorted(names.values())
            assert doc["primary"] == names["host"]
            net = workers_mod.worker_network(load_lab(LAB_FILE).scenarios[0].network, w)
            for role, vm in names.items():
                m = doc["machines"][vm][provider]
                assert m["hostname"] == role  # the guest's own name stays the lab's
                private = [n["ip"] for n in m["networks"] if n["type"] == "private_network"]
                assert private == [getattr(net, f"{role}_address")]
                ports = {f["id"]: f["host"] for f in forwards(m)}
                order = ("winrm", "winrm-ssl", "rdp", "ssh")
                assert tuple(ports[i] for i in order) == tuple(
                    workers_mod.shift_port(p, w) for p in base[role]
                )
                s = m["provider"]["settings"]
                vm_name = s.get("name") or s.get("vmname")
                for key, values in (("vm", [vm]), ("ip", private), ("port", ports.values())):
                    for v in values:
                        assert v not in seen[key], f"{provider}: worker {w} reuses {key} {v}"
                        seen[key].add(v)
                if vm_name:  # VirtualBox and Hyper-V names (libvirt: the plugin's own)
                    assert vm_name == f"rdplab-{vm}" and vm_name not in seen["hv"]
                    seen["hv"].add(vm_name)
                args = provisioner(m, "baseline")["args"]
                assert args[args.index("-Role") + 1] == role
                assert args[args.index("-DnsServer") + 1] == net.host_address
                if role == "host":
                    records = args[args.index("-ZoneRecords") + 1].split(",")
                    zone = {f"{r.split('=')[0]}.rdplab.test": r.split("=")[1] for r in records}
                    assert zone == net.zone
        assert len(seen["port"]) == workers * len(MACHINES) * len(GUEST_PORTS)
        assert len(seen["ip"]) == workers * len(MACHINES)


def test_pair_zero_is_the_default_lab(pair_dumps: Callable[[int], Dump], default: Dump) -> None:
    """A serial run (worker 0, or RDPLAB_WORKER unset) is the documented lab unchanged."""
    pair = pair_dumps(0)
    assert pair["machine_names"] == default["machine_names"]
    for machine, provider, m in each(default):
        p = pair["machines"][machine][provider]
        assert without_ids(p) == without_ids(m)
        rest = ("networks",)
        assert {k: v for k, v in p.items() if k not in rest} == {
            k: v for k, v in m.items() if k not in rest
        }


def test_provision_scripts_parse() -> None:
    tree_sitter = pytest.importorskip("tree_sitter")
    tsp = pytest.importorskip("tree_sitter_powershell")
    parser = tree_sitter.Parser(tree_sitter.Language(tsp.language()))
    assert [p.name for p in PROVISION_SCRIPTS] == ["baseline.ps1", "install-agent.ps1"]
    for script in PROVISION_SCRIPTS:
        source = script.read_bytes()
        assert not parser.parse(source).root_node.has_error, script.name
        # Windows PowerShell 5.1: none of PowerShell 7's operators
        code = re.sub(rb"<#.*?#>|#[^\n]*|'[^']*'|\"[^\"]*\"", b"", source, flags=re.S)
        for token in (b"??", b"&&", b"||", b"?."):
            assert token not in code, f"{script.name}: {token!r} is PowerShell 7 syntax"


def test_nothing_written_to_the_repo() -> None:
    assert not (REPO / ".vagrant").exists()
    assert not (REPO / "vagrant" / ".vagrant").exists()


# -- the router (RDPLAB_ROUTER=1) -----------------------------------------------------------


@pytest.fixture(scope="module")
def routed(dumps: Callable[[str], Dump]) -> Dump:
    return dumps("router")


def router_net() -> Any:
    net = load_lab(NETWORK_LAB).scenario("healthy-outside").network
    assert net.router is not None
    return net


def test_router_only_with_rdplab_router(default: Dump, routed: Dump) -> None:
    assert sorted(default["machine_names"]) == ["client", "host"]
    assert sorted(routed["machine_names"]) == ["client", "host", ROUTER_VM]
    assert routed["primary"] == "host"


def test_router_machine(routed: Dump) -> None:
    net = router_net()
    for provider in PROVIDERS:
        m = routed["machines"][ROUTER_VM][provider]
        assert m["box"] == "debian/bookworm64" and m["box_version"] is None
        assert (m["guest"], m["communicator"], m["hostname"]) == ("debian", "ssh", "router")
        assert m["ssh"]["guest_port"] == 22 and m["ssh"]["errors"] == []
        assert m["config_errors"] == [] and m["config_warnings"] == []
        assert m["provider"]["errors"] == [], (provider, m["provider"]["errors"])
        private = [n["ip"] for n in m["networks"] if n["type"] == "private_network"]
        # the lab LAN and the outside network, at .2: .1 is the hypervisor's adapter
        assert private == [ROUTER_LAN_ADDRESS, ROUTER_OUTSIDE_ADDRESS]
        outside = ipaddress.ip_network(f"{ROUTER_OUTSIDE_ADDRESS}/24", strict=False)
        assert ipaddress.ip_address(net.router.outside_address) in outside  # the lab file's
        assert ipaddress.ip_address(net.router.client_outside_address) in outside
        assert ipaddress.ip_address(ROUTER_LAN_ADDRESS) in net.subnet
        fw = {f["id"]: f for f in forwards(m)}
        assert sorted(fw) == ["ssh"]
        assert (fw["ssh"]["guest"], fw["ssh"]["host"], fw["ssh"]["host_ip"]) == (
            22,
            47022,
            "127.0.0.1",
        )
        (prov,) = m["provisioners"]
        assert (prov["name"], prov["type"], prov["path"]) == (
            "router",
            "shell",
            "vagrant/provision/router.sh",
        )
        assert prov["path_exists"] is True and prov["invalid"] is False
        assert prov["privileged"] is True  # as root: nft, sysctl, apt-get
        assert prov["args"] == [
            net.host_address,
            str(net.port),
            ROUTER_LAN_ADDRESS,
            ROUTER_OUTSIDE_ADDRESS,
        ]
    vb = routed["machines"][ROUTER_VM]["virtualbox"]
    assert _vbox_resources(vb) == (512, 1)
    assert vb["provider"]["settings"]["name"] == "rdplab-router"
    assert vb["provider"]["settings"]["linked_clone"] is True


def test_router_mode_changes_only_the_outside_legs(routed: Dump, default: Dump) -> None:
    """The client gets a NIC on the outside network, the host a route back through the
    router; nothing else of the Windows machines changes."""
    net = router_net()
    for provider in PROVIDERS:
        client = routed["machines"]["client"][provider]
        private = [n["ip"] for n in client["networks"] if n["type"] == "private_network"]
        assert private == [net.client_address, net.router.client_outside_address]
        host = routed["machines"]["host"][provider]
        names = [p["name"] for p in host["provisioners"]]
        assert names == ["agent-upload", "install-agent", "baseline", "router-route"]
        route = provisioner(host, "router-route")["inline"]
        assert "$prefix = '203.0.113.0/24'; $hop = '192.168.56.2'" in route
        assert f"-IPAddress '{net.host_address}'" in route
        assert "New-NetRoute -DestinationPrefix $prefix" in route
        plain = default["machines"]
        assert without_ids(host) == without_ids(plain["host"][provider])
        assert [p["name"] for p in routed["machines"]["client"][provider]["provisioners"]] == [
            p["name"] for p in plain["client"][provider]["provisioners"]
        ]
        for role in ("client", "host"):
            rest = ("networks", "provisioners")
            assert {
                k: v for k, v in routed["machines"][role][provider].items() if k not in rest
            } == {k: v for k, v in plain[role][provider].items() if k not in rest}


def test_router_is_pair_zero_only(vagrant: Vagrant, project: Path, home: Path) -> None:
    proc = vagrant.run(
        "validate",
        "--ignore-provider",
        project=project,
        home=home,
        extra={"RDPLAB_ROUTER": "1", "RDPLAB_WORKER": "1"},
    )
    assert proc.returncode != 0
    err = " ".join(proc.stderr.split())
    assert "rdplab Vagrantfile: RDPLAB_ROUTER=1 is for pair 0 only" in err
    assert 'got RDPLAB_WORKER="1"' in err


def test_router_provisioner_is_valid_bash() -> None:
    check = subprocess.run(
        ["bash", "-n", str(ROUTER_SCRIPT)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    text = ROUTER_SCRIPT.read_text()
    # the forward is made exactly as rdplab's fwd.set makes it (export_router.HEADER)
    rule = (
        'nft add rule ip rdplab_nat prerouting tcp dport "$1" dnat to "$2:$3" comment "\\"$tag\\""'
    )
    assert rule in text and f"run {rule}" in export_router.HEADER
    chain = "nft add chain ip rdplab_nat prerouting '{ type nat hook prerouting priority dstnat; }'"
    assert chain in text and f"run {chain}" in export_router.HEADER
    assert (
        'local tag="rdplab-fwd-$1"' in text and 'local tag="rdplab-fwd-$1"' in export_router.HEADER
    )
    usage = subprocess.run(["bash", str(ROUTER_SCRIPT)], capture_output=True, text=True)
    assert usage.returncode == 2  # no arguments: usage, nothing installed
    assert (
        "usage: " in usage.stderr
        and "HOST_ADDRESS RDP_PORT LAN_ADDRESS OUTSIDE_ADDRESS" in usage.stderr
    )
