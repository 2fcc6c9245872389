"""The netns lab with real packets: namespaces, veths, nftables, the RDP listener and probe.

Each test builds its own lab (client, router and host namespaces), runs
``rdplab.serve.RDPServer`` in the host namespace and ``rdplab.probe.probe`` in the
client's, and asserts what the kernel did to the packets: a connection through TLS, a SYN
that times out (dropped, never refused), a TLS flight that a too-small link swallows
unless the MSS is clamped, the client's MTU lowered or ICMP let through.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("dnslib", reason="the netns lab needs dnslib (pip install dnslib)")
pytest.importorskip("dpkt", reason="the netns lab needs dpkt (pip install dpkt)")

from rdplab.netlab import (
    Forward,
    LadderEvent,
    NetLab,
    NetlabUnavailable,
    NetPlan,
    cleanup_stale,
    render,
    require,
    server_flight_size,
    topology,
)
from rdplab.netlab import run as netrun
from rdplab.serve import Behaviour, Identity, make_identity

from .conftest import new_run_id

pytestmark = pytest.mark.netns

Lab = Callable[..., NetLab]
HOST, PORT = "192.168.56.11", 3389
TUNNEL_MTU = 1400  # a plausible VPN tunnel MTU
SHORT = 2.0  # the probe's timeout where a timeout is the expected answer
TLS_STALL = 3.0  # the probe's timeout in the black-hole cases


def stages(result: Any) -> dict[str, tuple[bool, str]]:
    return {s.name: (s.ok, s.detail) for s in result.stages}


def root_state() -> dict[str, Any]:
    """The root namespace's links, addresses, routes and nft ruleset (this process runs
    in the root namespace: nothing here is a lab's)."""

    def run(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    links = json.loads(run("ip", "-j", "link"))
    for link in links:  # counters and timers move by themselves
        link.pop("stats", None)
        link.pop("stats64", None)
    return {
        "links": links,
        "addrs": json.loads(run("ip", "-j", "addr")),
        "routes": json.loads(run("ip", "-j", "route", "show", "table", "all")),
        "nft": run("nft", "list", "ruleset"),
    }


def ours(run_id: str) -> list[str]:
    return [ns for ns in netrun.list_namespaces() if ns.startswith(f"rdplab-{run_id}-")]


def assert_tls_through(result: Any) -> None:
    got = stages(result)
    assert result.ok, got
    assert [name for name in got] == ["name-resolution", "tcp", "x224", "tls"]
    assert all(ok for ok, _ in got.values()), got


def assert_tcp_timeout(result: Any) -> None:
    got = stages(result)
    assert not result.ok
    ok, detail = got["tcp"]
    assert not ok and "timed out" in detail, got  # dropped, not refused
    assert "x224" not in got


# -- 0. what require() says where something is missing (no root needed) --------------------------
def test_require_names_what_is_missing_and_how(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "nft" else real_which(name))
    with pytest.raises(NetlabUnavailable) as caught:
        require()
    message = str(caught.value)
    assert "\n" not in message
    assert "nft (apt-get install nftables)" in message


# -- 1. build and close leave nothing -------------------------------------------------------------
def test_build_and_close_leave_nothing_behind(lab: Lab) -> None:
    before = root_state()
    run_id = new_run_id()
    built = lab("outside", run_id=run_id, forwards=(Forward(PORT, HOST, PORT),))
    names = sorted(built.names.values())
    assert sorted(ours(run_id)) == names
    assert all(run_id in name for name in names)
    router_links = json.loads(built.exec("router", ["ip", "-j", "link"]).stdout)
    lab_links = [link["ifname"] for link in router_links if link["ifname"] != "lo"]
    assert lab_links and all(run_id in name for name in lab_links), lab_links
    ruleset = built.exec("router", ["nft", "list", "ruleset"]).stdout
    assert f"table ip rdplab_{run_id}" in ruleset
    assert root_state() == before  # nothing of the lab shows in the root namespace
    built.close()
    built.close()  # idempotent
    assert ours(run_id) == []
    assert root_state() == before


# -- 2. a dead run's leftovers go ------------------------------------------------------------------
def stale_set(dead_pid: int) -> dict[str, str]:
    """A full set of namespaces, links and addresses named for a dead process."""
    names = topology.names_for(new_run_id(), pid=dead_pid)
    run_id = names["router"].split("-")[1]
    topology.build(NetPlan(run_id=run_id, client_site="vpn"), names)
    return names


def test_cleanup_stale_removes_a_dead_runs_set_and_keeps_live_ones(lab: Lab) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = lab("lan")
    with netrun.exclusive():  # other pytest-xdist workers' cleanup waits meanwhile
        stale = stale_set(dead.pid)
        assert set(stale.values()) <= set(netrun.list_namespaces())
        removed = cleanup_stale()
    assert sorted(stale.values()) == sorted(n for n in removed if f"-p{dead.pid}-" in n)
    assert not set(stale.values()) & set(netrun.list_namespaces())
    assert sorted(ours(live.plan.run_id)) == sorted(live.names.values())
    # and build() clears a dead run's set before it builds
    stale = stale_set(dead.pid)
    lab("lan")
    assert not set(stale.values()) & set(netrun.list_namespaces())


# -- running code inside ------------------------------------------------------------------------
def test_call_and_start_thread_run_inside_the_namespaces(lab: Lab) -> None:
    built = lab("lan")

    def netns_inode() -> int:
        return os.stat("/proc/thread-self/ns/net").st_ino

    for role, ns in built.names.items():
        assert built.call(role, netns_inode) == os.stat(f"/run/netns/{ns}").st_ino
    # this (main) thread never moved: it is in the process's namespace, none of the lab's
    assert netns_inode() == os.stat("/proc/self/ns/net").st_ino
    assert netns_inode() not in {os.stat(f"/run/netns/{ns}").st_ino for ns in built.names.values()}
    with pytest.raises(ZeroDivisionError):
        built.call("client", lambda: 1 // 0)
    listening = threading.Event()
    got: list[bytes] = []

    def serve_once() -> None:  # a listener on the host's address: only exists in the host ns
        with socket.create_server((HOST, 5000)) as server:
            listening.set()
            server.settimeout(5)
            conn, _ = server.accept()
            with conn:
                got.append(conn.recv(16))

    thread = built.start_thread("host", serve_once)
    assert listening.wait(5)

    def send() -> None:
        with socket.create_connection((HOST, 5000), timeout=5) as conn:
            conn.sendall(b"hello")

    built.call("client", send)
    thread.join(5)
    assert got == [b"hello"]
    assert built.exec("host", ["ip", "-4", "-o", "addr", "show"]).stdout.count(HOST) == 1
    assert built.shell_argv("client")[:4] == ["ip", "netns", "exec", built.names["client"]]


# -- 3. on the LAN: TCP, X.224 and TLS ------------------------------------------------------------
def test_lan_probe_reaches_the_host_through_tls(lab: Lab) -> None:
    built = lab("lan")
    server = built.serve_rdp()
    result = built.probe(HOST, PORT, timeout=5)
    assert_tls_through(result)
    assert server.handshake_done.wait(5) and server.handshakes == 1
    assert built.client_address == "192.168.56.10"


# -- 4. from outside: port forwards ---------------------------------------------------------------
def test_outside_with_a_forward_reaches_the_host(lab: Lab) -> None:
    built = lab("outside", forwards=(Forward(PORT, HOST, PORT),))
    server = built.serve_rdp()
    result = built.probe("203.0.113.1", PORT, timeout=5)
    assert_tls_through(result)
    assert server.handshakes == 1
    assert built.counters()[f"rdplab {built.plan.run_id} forward {PORT}"] == 1


def test_outside_without_a_forward_times_out_at_tcp(lab: Lab) -> None:
    built = lab("outside")
    server = built.serve_rdp()
    assert_tcp_timeout(built.probe("203.0.113.1", PORT, timeout=SHORT))
    assert server.seen.requests == []
    assert built.counters()[f"rdplab {built.plan.run_id} wan unsolicited dropped"] >= 1


def test_outside_forward_to_an_old_address_times_out_at_tcp(lab: Lab) -> None:
    old_lease = "192.168.56.99"  # the host moved to .11; the forward still names .99
    built = lab("outside", forwards=(Forward(PORT, old_lease, PORT),))
    server = built.serve_rdp()
    assert_tcp_timeout(built.probe("203.0.113.1", PORT, timeout=SHORT))
    assert server.seen.requests == []
    assert built.counters()[f"rdplab {built.plan.run_id} forward {PORT}"] == 1


# -- 5. the host's firewall drops the port --------------------------------------------------------
def test_host_firewall_drop_times_out_at_tcp(lab: Lab) -> None:
    built = lab("lan", host_drop_ports=(PORT,))
    built.serve_rdp()
    assert_tcp_timeout(built.probe(HOST, PORT, timeout=SHORT))
    drops = built.counters("host")[f"rdplab {built.plan.run_id} host firewall drops {PORT}"]
    assert drops >= 2  # the SYN and at least one retransmission, all dropped


# -- 6. VPN: the PMTUD black hole and its three fixes ---------------------------------------------
def test_the_served_flight_does_not_fit_a_tunnel(enterprise_identity: Identity) -> None:
    """Why the black-hole tests serve a CA-issued chain: the stand-in self-signed EC
    certificate's flight fits any plausible tunnel MTU, the chain's does not."""
    assert server_flight_size(make_identity()) < TUNNEL_MTU - 40
    assert server_flight_size(enterprise_identity) > TUNNEL_MTU


def vpn(lab: Lab, identity: Identity, **fields: Any) -> tuple[NetLab, Any]:
    fields.setdefault("client_link_mtu", TUNNEL_MTU)
    built = lab("vpn", **fields)
    server = built.serve_rdp(Behaviour(identity=identity))
    return built, server


def test_vpn_black_hole_stalls_tls(lab: Lab, enterprise_identity: Identity) -> None:
    built, server = vpn(lab, enterprise_identity, icmp_frag_needed=False)
    result = built.probe(HOST, PORT, timeout=TLS_STALL)
    got = stages(result)
    assert got["tcp"][0] and got["x224"][0], got
    assert got["tls"] == (False, f"TLS handshake with {HOST}:{PORT} timed out"), got
    assert server.handshakes == 0
    assert built.counters()[f"rdplab {built.plan.run_id} frag-needed dropped"] >= 2


def test_vpn_mss_clamp_lets_tls_through(lab: Lab, enterprise_identity: Identity) -> None:
    built, _ = vpn(lab, enterprise_identity, icmp_frag_needed=False, mss_clamp=TUNNEL_MTU - 40)
    assert_tls_through(built.probe(HOST, PORT, timeout=TLS_STALL))
    assert built.counters()[f"rdplab {built.plan.run_id} mss clamp"] >= 1


def test_vpn_lower_client_mtu_lets_tls_through(lab: Lab, enterprise_identity: Identity) -> None:
    built, _ = vpn(lab, enterprise_identity, icmp_frag_needed=False, client_if_mtu=TUNNEL_MTU)
    assert_tls_through(built.probe(HOST, PORT, timeout=TLS_STALL))
    assert built.counters()[f"rdplab {built.plan.run_id} frag-needed dropped"] == 0


def test_vpn_pmtud_with_icmp_lets_tls_through(lab: Lab, enterprise_identity: Identity) -> None:
    built, _ = vpn(lab, enterprise_identity, icmp_frag_needed=True)
    assert_tls_through(built.probe(HOST, PORT, timeout=TLS_STALL))


# -- 7. the lab DNS -------------------------------------------------------------------------------
def test_lab_dns_answers_the_client(lab: Lab) -> None:
    built = lab("vpn", dns_zone={"host.rdplab.test": HOST, "old.rdplab.test": "192.168.56.99"})
    assert built.dns_server == "10.99.0.1"
    assert built.resolve("host.rdplab.test") == HOST
    assert built.resolve("OLD.rdplab.test.") == "192.168.56.99"
    assert built.resolve("nowhere.rdplab.test") is None
    assert built.dns is not None
    assert built.dns.resolver.asked == [
        "host.rdplab.test",
        "old.rdplab.test",
        "nowhere.rdplab.test",
    ]


# -- 8. the ladder --------------------------------------------------------------------------------
def labels(events: list[LadderEvent], direction: str | None = None) -> list[str]:
    return [e.label for e in events if direction is None or e.direction == direction]


@pytest.mark.usefixtures("capture_ready")
def test_ladder_of_the_black_hole(lab: Lab, enterprise_identity: Identity) -> None:
    built, _ = vpn(lab, enterprise_identity, icmp_frag_needed=False)
    cap = built.capture()
    result = built.probe(HOST, PORT, timeout=TLS_STALL)
    events = cap.stop()
    ladder = render(events)
    assert not result.ok
    up, down = labels(events, "client->host"), labels(events, "host->client")
    for label in ("SYN", "X.224 Connection Request", "TLS ClientHello"):
        assert label in up, ladder
    for label in ("SYN-ACK", "X.224 Connection Confirm"):
        assert label in down, ladder
    too_big = [e for e in events if e.label == f"dropped: too big for the link ({TUNNEL_MTU})"]
    assert too_big and all(e.direction == "host->client" for e in too_big), ladder
    assert all(e.size > TUNNEL_MTU and "TLS server flight" in e.note for e in too_big), ladder
    assert any(e.retransmission for e in too_big), ladder
    assert not [e for e in events if e.label.startswith("ICMP")], ladder  # none reached the host
    first = {label: labels(events).index(label) for label in ("SYN", "SYN-ACK", "TLS ClientHello")}
    assert first["SYN"] < first["SYN-ACK"] < first["TLS ClientHello"], ladder


@pytest.mark.usefixtures("capture_ready")
def test_ladder_of_the_clamped_connection(lab: Lab, enterprise_identity: Identity) -> None:
    built, _ = vpn(lab, enterprise_identity, icmp_frag_needed=False, mss_clamp=TUNNEL_MTU - 40)
    cap = built.capture()
    result = built.probe(HOST, PORT, timeout=TLS_STALL)
    events = cap.stop()
    ladder = render(events)
    assert result.ok, ladder
    flight = [e for e in events if e.label.startswith("TLS server flight")]
    assert flight and all(e.direction == "host->client" and e.note == "forwarded" for e in flight)
    assert all(e.size <= TUNNEL_MTU for e in flight), ladder
    sent = sum(int(e.label.split("(")[1].split()[0]) for e in flight if not e.retransmission)
    assert sent == server_flight_size(enterprise_identity), ladder
    assert not [e for e in events if e.label.startswith("dropped")], ladder


@pytest.mark.usefixtures("capture_ready")
def test_ladder_shows_pmtud_icmp_reaching_the_host(lab: Lab, enterprise_identity: Identity) -> None:
    built, _ = vpn(lab, enterprise_identity, icmp_frag_needed=True)
    cap = built.capture()
    assert built.probe(HOST, PORT, timeout=TLS_STALL).ok
    events = cap.stop()
    icmp = [e for e in events if e.label == f"ICMP fragmentation needed (mtu {TUNNEL_MTU})"]
    assert icmp and all(e.direction == "router->host" for e in icmp), render(events)


# -- 9. two labs at once --------------------------------------------------------------------------
def test_two_labs_with_the_same_addresses_coexist(lab: Lab) -> None:
    first, second = lab("lan"), lab("lan")
    assert not set(first.names.values()) & set(second.names.values())
    servers = [first.serve_rdp(), second.serve_rdp()]
    for built in (first, second):
        assert_tls_through(built.probe(HOST, PORT, timeout=5))
    assert [s.handshakes for s in servers] == [1, 1]  # each client reached its own host
