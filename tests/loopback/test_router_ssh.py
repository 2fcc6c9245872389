"""The router over SSH, for real: paramiko to a real OpenSSH server on 127.0.0.1 whose
forced command runs every command inside a lab router namespace (``rdplab.netlab``:
veth links, nftables), so ``SSHRouterBackend``'s scripts change real nftables rules and
read them back with ``nft -j``.

What is real: TCP, the SSH handshake, host-key checking, public-key authentication, exec
channels, stdin, exit statuses, bash, nftables, ``ip``, sysfs MTUs in the namespace.
What is not: the router is a namespace on this machine, not a router box; ``sudo`` is not
installed here, so a stand-in ``sudo`` that drops its options runs the command as the root
the test already is (real sudo's policy is not exercised); dnsmasq is not run, and
``dhcp.reserve`` is not applied here (it writes /etc/dnsmasq.d on the machine itself:
the unit tests read the file it writes).
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rdplab import testinfra_hosts
from rdplab.backends.base import CallLog
from rdplab.backends.router_ssh import SSHRouterBackend
from rdplab.errors import BackendError
from rdplab.ops import Op
from rdplab.transports.ssh import SSHTransport

from .ssh_server import (
    PRIVSEP_DIR,
    SSHServer,
    find_sshd,
    launch,
    make_key,
)

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
PROVISION = REPO / "vagrant" / "provision" / "router.sh"
LAN, OUTSIDE = "192.168.56.1", "203.0.113.1"
FWD = Op("fwd.set", {"port": 3389, "to": "192.168.56.11", "to_port": 3389})
_runs = itertools.count()

SHELL = """#!/bin/sh
# The router: every command this key runs goes to bash inside the lab's router namespace.
printf '%s\\n' "$SSH_ORIGINAL_COMMAND" | head -n 1 >> {log}
PATH={shim}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
if [ -e {as_nobody} ]; then
    HOME=/nonexistent exec {ip} netns exec {ns} setpriv --reuid=65534 --regid=65534 \\
        --clear-groups /bin/bash --norc -c "$SSH_ORIGINAL_COMMAND"
fi
exec {ip} netns exec {ns} /bin/bash --norc -c "$SSH_ORIGINAL_COMMAND"
"""

SUDO_SHIM = """#!/bin/sh
# Stand-in for sudo (not installed here): the command already runs as root; drop options.
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
exec "$@"
"""


def new_run_id() -> str:
    return f"s{os.getpid():x}{next(_runs):x}"[-10:]


@dataclass
class RouterLab:
    """A router namespace behind a real sshd."""

    server: SSHServer
    netlab: Any  # rdplab.netlab.NetLab
    run_id: str
    opened: list[SSHTransport] = field(default_factory=list)

    @property
    def lan_interface(self) -> str:
        return f"br{self.run_id}"

    @property
    def outside_interface(self) -> str:
        return f"rc{self.run_id}"  # outside: the router's WAN link, toward the client

    def backend(self, calls: CallLog | None = None, **kw: Any) -> SSHRouterBackend:
        """A backend over an open transport (closed by the fixture's server stop)."""
        transport = self.server.transport()
        transport.open()
        self.opened.append(transport)
        kw.setdefault("client_link", self.outside_interface)
        kw.setdefault("lan_interface", self.lan_interface)
        kw.setdefault("outside_interface", self.outside_interface)
        return SSHRouterBackend(transport, calls or CallLog(), **kw)

    def sessions(self) -> int:
        """exec requests sshd itself served (its VERBOSE log)."""
        return self.server.log().count("Starting session: forced-command")

    def commands(self) -> list[str]:
        path = self.server.state_dir / "commands.log"
        return path.read_text().splitlines() if path.exists() else []

    def nft(self, *args: str) -> str:
        done = self.netlab.exec("router", ["nft", *args])
        assert done.returncode == 0, done.stderr
        return str(done.stdout)

    def provision_forward(self) -> str:
        """vagrant/provision/router.sh's healthy forward, run in the namespace directly."""
        script = (
            f"RDPLAB_ROUTER_PROVISION_LIB=1 . {shlex.quote(str(PROVISION))}\n"
            "healthy_forward 3389 192.168.56.11 3389\n"
        )
        done = self.netlab.exec("router", ["bash", "-euc", script])
        assert done.returncode == 0, done.stderr
        return str(done.stdout).strip()

    def as_nobody(self, on: bool) -> None:
        knob = self.server.state_dir / "as_nobody"
        if on:
            knob.write_text("")
        else:
            knob.unlink(missing_ok=True)


def start_router_sshd(root: Path, namespace: str) -> SSHServer:
    """sshd on 127.0.0.1 whose only key's forced command is a shell in ``namespace``."""
    sshd = find_sshd()
    ip = shutil.which("ip")
    assert ip is not None
    root.mkdir(parents=True, exist_ok=True)
    state = root / "state"
    state.mkdir(exist_ok=True)
    shim = root / "shim"
    shim.mkdir(exist_ok=True)
    (root / "home").mkdir(exist_ok=True)
    (shim / "sudo").write_text(SUDO_SHIM)
    (shim / "sudo").chmod(0o755)
    if not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    shell = root / "router-shell"
    shell.write_text(
        SHELL.format(
            log=shlex.quote(str(state / "commands.log")),
            shim=shlex.quote(str(shim)),
            as_nobody=shlex.quote(str(state / "as_nobody")),
            ip=shlex.quote(ip),
            ns=shlex.quote(namespace),
        )
    )
    shell.chmod(0o755)
    host_key = root / "ssh_host_ed25519_key"
    host_line = make_key(host_key, "rdplab-router-host")
    client_key = root / "client_ed25519"
    client_line = make_key(client_key, "rdplab-router-client")
    authorized = root / "authorized_keys"
    authorized.write_text(f'restrict,command="{shell}" {client_line}\n')
    authorized.chmod(0o600)
    # the sshd config gives the forced command an empty HOME (no start-up files)
    return launch(
        root, sshd, "root", (host_key, host_line), client_key, state, authorized,
        password_auth=False,
    )  # fmt: skip


def require_root_netns() -> None:
    from rdplab.netlab import NetlabUnavailable, require

    if os.geteuid() != 0:
        pytest.skip("the router over SSH needs root (network namespaces, sshd as root)")
    try:
        require()
    except NetlabUnavailable as exc:
        pytest.skip(str(exc))
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv missing: apt-get install util-linux")


@contextmanager
def router_lab(root: Path) -> Iterator[RouterLab]:
    """A netlab (client outside, a router, a host) and sshd into its router namespace."""
    require_root_netns()
    find_sshd()
    from rdplab.netlab import NetPlan, build

    run_id = new_run_id()
    netlab = build(NetPlan(run_id=run_id, client_site="outside"))
    try:
        server = start_router_sshd(root, netlab.names["router"])
        lab = RouterLab(server, netlab, run_id)
        try:
            yield lab
        finally:
            for t in lab.opened:
                t.close()
            server.stop()
    finally:
        netlab.close()


@pytest.fixture
def router(tmp_path: Path) -> Iterator[RouterLab]:
    with router_lab(tmp_path / "router") as lab:
        yield lab


# -- end to end -------------------------------------------------------------------------------
@pytest.mark.ssh_loopback
def test_apply_gather_again_remove(router: RouterLab) -> None:
    calls = CallLog()
    b = router.backend(calls)
    before = b.gather().raw
    assert before == {
        "addresses": {"lan": LAN, "outside": OUTSIDE},
        "forwards": {},
        "link_mtu": 1500,
        "icmp_frag_needed": "pass",
        "mss_clamp": False,
        "dhcp_reservations": {},
    }
    sessions, commands = router.sessions(), len(router.commands())

    first = b.apply([FWD, Op("mss.clamp", {})])
    assert [(r.op, r.changed, r.error) for r in first.results] == [
        ("fwd.set", True, None),
        ("mss.clamp", True, None),
    ]
    assert router.sessions() == sessions + 1  # the batch was ONE SSH command
    assert router.commands()[commands:] == [
        f"env LC_ALL=C RDPLAB_CLIENT_LINK={router.outside_interface} bash -s"
    ]
    assert "tcp dport 3389 dnat to 192.168.56.11:3389" in router.nft(
        "list", "table", "ip", "rdplab_nat"
    )

    after = b.gather().raw
    assert after["forwards"] == {"3389": {"port": 3389, "to": "192.168.56.11", "to_port": 3389}}
    assert after["mss_clamp"] is True and after["icmp_frag_needed"] == "pass"

    again = b.apply([FWD, Op("mss.clamp", {})])
    assert [r.changed for r in again.results] == [False, False]
    assert b.gather().raw == after

    gone = b.apply([Op("fwd.remove", {"port": 3389})])
    assert [(r.op, r.changed) for r in gone.results] == [("fwd.remove", True)]
    assert b.gather().raw["forwards"] == {}
    assert router.sessions() == sessions + 6  # three batches and three gathers
    assert calls.to_json() == {"router/setup": 7}
    assert b.transport.commands == 7
    assert router.server.log().count("Accepted publickey for root") == 1  # one connection


@pytest.mark.ssh_loopback
def test_icmp_mtu_and_a_snapshot_restored(router: RouterLab) -> None:
    router.provision_forward()  # the healthy router, as the Vagrant provisioner leaves it
    b = router.backend()
    base = b.snapshot()
    assert base["forwards"] == {"3389": {"port": 3389, "to": "192.168.56.11", "to_port": 3389}}
    broken = b.apply(
        [
            Op("fwd.set", {"port": 3389, "to": "192.168.56.23", "to_port": 3389}),
            Op("fwd.set", {"port": 8080, "to": "192.168.56.11", "to_port": 80}),
            Op("icmp.frag", {"allow": False}),
            Op("link.mtu", {"mtu": 1000}),
            Op("mss.clamp", {}),
        ]
    )
    assert broken.changes == 5 and not broken.errors
    nat = router.nft("list", "table", "ip", "rdplab_nat")
    assert "dnat to 192.168.56.23:3389" in nat and "tcp dport 8080" in nat
    assert "frag-needed drop" in router.nft("list", "table", "inet", "rdplab_filter")
    link = f"/sys/class/net/{router.outside_interface}/mtu"
    assert router.netlab.exec("router", ["cat", link]).stdout.strip() == "1000"

    back = b.restore(base)
    assert not back.errors
    assert sorted(r.op for r in back.results if r.changed) == [
        "fwd.remove",  # 8080
        "fwd.set",  # 3389 to the host again
        "icmp.frag",
        "link.mtu",
        "mss.unclamp",
    ]
    assert b.snapshot() == base
    assert b.restore(base).changes == 0  # a second restore changes nothing


@pytest.mark.ssh_loopback
def test_a_failing_op_leaves_the_earlier_ones_applied(router: RouterLab) -> None:
    b = router.backend(client_link="nosuch0")
    result = b.apply(
        [
            FWD,
            Op("link.mtu", {"mtu": 1400}),
            Op("fwd.set", {"port": 8080, "to": "192.168.56.12", "to_port": 80}),
        ]
    )
    assert [(r.op, r.changed) for r in result.results] == [("fwd.set", True), ("link.mtu", False)]
    error = result.results[1].error
    assert error == "exit 1: cat: /sys/class/net/nosuch0/mtu: No such file or directory"
    facts = b.gather().raw
    assert facts["forwards"] == {"3389": {"port": 3389, "to": "192.168.56.11", "to_port": 3389}}
    assert facts["link_mtu"] is None  # no such link: no MTU to report


@pytest.mark.ssh_loopback
def test_without_root_nothing_runs_and_the_error_says_so(router: RouterLab) -> None:
    b = router.backend()
    router.as_nobody(True)
    with pytest.raises(BackendError) as err:
        b.apply([FWD])
    assert str(err.value) == (
        "127.0.0.1: router: rdplab: the router's commands need root (nft, ip): log in as"
        " root, or give the user passwordless sudo and set sudo: true"
    )
    with pytest.raises(BackendError, match=r"the facts script failed \(exit 77\): rdplab: the"):
        b.gather()
    router.as_nobody(False)
    assert b.gather().raw["forwards"] == {}  # nothing was applied


@pytest.mark.ssh_loopback
def test_sudo_and_a_named_interface_that_is_not_there(router: RouterLab) -> None:
    b = router.backend(sudo=True)
    assert b.apply([FWD]).changes == 1
    assert router.commands()[-1].startswith("sudo -n env LC_ALL=C RDPLAB_CLIENT_LINK=")
    wrong = router.backend(lan_interface="eth7")
    with pytest.raises(BackendError) as err:
        wrong.gather()
    assert str(err.value).startswith(
        "127.0.0.1: router: interface eth7 (lan_interface) has no IPv4 address on the router"
    )


# -- testinfra over the same connection ---------------------------------------------------------
@pytest.mark.ssh_loopback
def test_testinfra_host_on_the_router(router: RouterLab) -> None:
    b = router.backend()
    b.apply([FWD, Op("mss.clamp", {})])
    host = testinfra_hosts.testinfra_host(b.transport, sudo=True)
    assert host.backend.NAME == "paramiko"
    rules = testinfra_hosts.router_rules(host)
    assert rules == {
        "forwards": {"3389": {"port": 3389, "to": "192.168.56.11", "to_port": 3389}},
        "mss_clamp": True,
        "icmp_frag_needed": "pass",
    }
    assert router.commands()[-1].startswith("sudo /bin/sh -c ")  # testinfra's own sudo
    assert host.run("nft list table ip rdplab_nat").stdout.count("dnat to") == 1
    assert host.run("false").rc == 1


# -- the Vagrant router's provisioning leaves rdplab's own forward -------------------------------


def test_the_vagrant_provisioners_forward_is_rdplabs(router: RouterLab) -> None:
    """router.sh's healthy forward, run in the namespace (its rules only: no packages,
    no sysctl files), is the rule fwd.set makes: fwd.set then changes nothing, and the
    facts read it."""
    made = "rdplab router: forward of TCP 3389 to 192.168.56.11:3389"
    assert router.provision_forward() == f"{made} made"
    for _ in range(5):  # the check reads nft's whole output: never a SIGPIPE'd nft
        assert router.provision_forward() == f"{made} already there"
    b = router.backend()
    assert b.gather().raw["forwards"] == {
        "3389": {"port": 3389, "to": "192.168.56.11", "to_port": 3389}
    }
    assert [(r.op, r.changed) for r in b.apply([FWD]).results] == [("fwd.set", False)]
