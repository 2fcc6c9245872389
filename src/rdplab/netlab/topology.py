"""A ``NetPlan`` made real: namespaces, veth pairs, a LAN bridge, addresses, routes, MTUs.

The router namespace always holds the LAN: a bridge ``br<run>`` carrying
``router_lan_address``, with the host attached by a veth pair (``h<run>`` in the host
namespace, ``rh<run>`` a bridge port in the router). The client is attached by a second
pair (``c<run>`` in the client namespace, ``rc<run>`` in the router):

* ``lan``: ``rc<run>`` is a bridge port too: client and host share the LAN, nothing is
  routed between them.
* ``outside``: ``rc<run>`` is the router's WAN interface (``router_outside_address``); the
  client dials that address and the router DNATs its port forwards onto the LAN.
* ``vpn``: ``rc<run>`` is a tunnel-like routed link (``vpn_subnet``); the client routes
  ``lan_subnet`` via ``router_vpn_address``; the router forwards without NAT.

MTUs. ``client_link_mtu`` is set on the router's end of the client link (``rc<run>``) and
``client_if_mtu`` on the client's end (``c<run>``). Veth ends may differ, and in practice
the kernel enforces the MTU where it matters for the lab: the router's IP forwarding path
checks the *outgoing* device's MTU, so a full-size DF segment from the host cannot be
forwarded onto ``rc<run>`` and the router generates ICMP fragmentation-needed back to the
host (tests/netns measures it). The receiving veth checks its own MTU too, so a client
sending segments larger than ``client_link_mtu`` would be dropped silently at ``rc<run>``;
the lab's clients send small segments (requests, ClientHello), so only the host->client
direction meets the MTU. In the ``lan`` site the client's port is a bridge port: a lower
``client_link_mtu`` there is a layer-2 mismatch that drops big frames silently (no router
sends ICMP), which is what a LAN with mismatched MTUs does.

Safety: every link is created with ``ip link add NAME netns A type veth peer name PEER
netns B``, i.e. directly inside lab namespaces; nothing is ever added to, moved through or
configured in the root namespace. No namespace has a route out of the lab: the router has
no default route, the host's default route is the lab router, the client has only its link.
The host's and client's veths send one segment per packet (``gso_max_segs 1``), as a
real NIC puts them on the wire: the capture then sees wire-sized packets, not a
super-packet the kernel would split later. IPv6 is disabled inside the lab namespaces (no
router solicitations, MLD or DAD noise in captures, no stray traffic); the router's
forwarding is enabled inside its namespace only.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from rdplab.netlab.run import (
    LOCK,
    RUN_ID_RE,
    NetlabError,
    delete_namespace,
    exclusive,
    ns_argv,
    ns_name,
    sh,
)

Site = Literal["lan", "outside", "vpn"]

OUTSIDE_PREFIX = 24  # the outside link (203.0.113.0/24 by default: TEST-NET-3)
LAN_MTU = 1500


@dataclass(frozen=True)
class Forward:
    """A port forward of the router: TCP to the router's outside ``port`` is DNATed to
    ``to_address``:``to_port`` on the LAN."""

    port: int
    to_address: str
    to_port: int


@dataclass(frozen=True)
class NetPlan:
    """What to build: where the client sits and what the router and host do to packets."""

    run_id: str  # short [a-z0-9]; part of every namespace, link and table name
    client_site: Site
    lan_subnet: str = "192.168.56.0/24"
    #: the host's current address (may differ from a forward's target: a moved DHCP lease)
    host_address: str = "192.168.56.11"
    client_lan_address: str = "192.168.56.10"  # client_site "lan"
    router_lan_address: str = "192.168.56.1"
    router_outside_address: str = "203.0.113.1"  # client_site "outside": the client dials it
    client_outside_address: str = "203.0.113.20"
    vpn_subnet: str = "10.99.0.0/24"  # client_site "vpn": routed (not NATed) to the LAN
    router_vpn_address: str = "10.99.0.1"
    client_vpn_address: str = "10.99.0.2"
    forwards: tuple[Forward, ...] = ()
    #: MTU of the router's interface toward the client (the path MTU of the client's link)
    client_link_mtu: int = 1500
    #: the client's own interface MTU (lowering it makes the client advertise a smaller MSS)
    client_if_mtu: int = 1500
    #: False: the router drops ICMP fragmentation-needed (a PMTUD black hole)
    icmp_frag_needed: bool = True
    #: clamp the MSS of forwarded SYNs to this value (None: no clamp)
    mss_clamp: int | None = None
    #: the host's firewall drops inbound TCP to these ports (nft in the host namespace)
    host_drop_ports: tuple[int, ...] = ()
    #: name -> A record, served by the lab DNS in the router namespace
    dns_zone: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not RUN_ID_RE.match(self.run_id):
            raise ValueError(f"run_id must be 1-10 characters [a-z0-9], not {self.run_id!r}")
        if self.client_site not in ("lan", "outside", "vpn"):
            raise ValueError(f"client_site must be lan, outside or vpn: {self.client_site!r}")
        for mtu in (self.client_link_mtu, self.client_if_mtu):
            if not 576 <= mtu <= 9000:
                raise ValueError(f"an MTU of {mtu} is outside 576..9000")
        lan = ipaddress.ip_network(self.lan_subnet, strict=False)
        for name in ("host_address", "client_lan_address", "router_lan_address"):
            if ipaddress.ip_address(getattr(self, name)) not in lan:
                raise ValueError(f"{name} {getattr(self, name)} is not in {lan}")
        for f in self.forwards:
            ipaddress.ip_address(f.to_address)
        for address in self.dns_zone.values():
            ipaddress.ip_address(address)


@dataclass(frozen=True)
class Links:
    """Interface names of one lab (each carries the run id)."""

    bridge: str  # in the router: the LAN
    host: str  # in the host namespace
    router_host_port: str  # in the router: the host's bridge port
    client: str  # in the client namespace
    router_client: str  # in the router: the client link (bridge port for lan)

    @classmethod
    def for_run(cls, run_id: str) -> Links:
        return cls(f"br{run_id}", f"h{run_id}", f"rh{run_id}", f"c{run_id}", f"rc{run_id}")


@dataclass(frozen=True)
class Addressing:
    """Where each end sits, as derived from the plan's site."""

    client_address: str
    client_prefix: int
    router_client_address: str | None  # None for lan (the client is on the bridge)
    dial_address: str  # what the client dials to reach the host's forwarded port(s)
    dns_address: str  # the router address the client can reach: the lab DNS


def addressing(plan: NetPlan) -> Addressing:
    """The client side's addresses for ``plan``."""
    lan = ipaddress.ip_network(plan.lan_subnet, strict=False)
    if plan.client_site == "lan":
        return Addressing(
            plan.client_lan_address,
            lan.prefixlen,
            None,
            plan.host_address,
            plan.router_lan_address,
        )
    if plan.client_site == "outside":
        out = plan.router_outside_address
        return Addressing(plan.client_outside_address, OUTSIDE_PREFIX, out, out, out)
    vpn = ipaddress.ip_network(plan.vpn_subnet, strict=False)
    gw = plan.router_vpn_address
    return Addressing(plan.client_vpn_address, vpn.prefixlen, gw, plan.host_address, gw)


def _ip(ns: str, *args: str) -> None:
    sh(["ip", "-n", ns, *args])


def _sysctl(ns: str, *settings: str) -> None:
    # -e: a key this kernel does not have (bridge netfilter not loaded) is not an error
    sh(ns_argv(ns, ["sysctl", "-q", "-e", "-w", *settings]))


def build(plan: NetPlan, names: dict[str, str]) -> Links:
    """Create the namespaces and links of ``plan``; on any failure remove what was made."""
    run_id = plan.run_id
    links = Links.for_run(run_id)
    made: list[str] = []
    with exclusive():
        try:
            for role in ("router", "host", "client"):
                sh(["ip", "netns", "add", names[role]])
                made.append(names[role])
            _configure(plan, names, links)
        except BaseException:
            for ns in reversed(made):
                delete_namespace(ns)
            raise
    return links


def _configure(plan: NetPlan, names: dict[str, str], links: Links) -> None:
    client, router, host = names["client"], names["router"], names["host"]
    lan = ipaddress.ip_network(plan.lan_subnet, strict=False)
    ad = addressing(plan)
    no_v6 = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    _sysctl(
        router,
        *no_v6,
        "net.ipv4.ip_forward=1",
        # bridged frames are switched, not filtered by the router's IP rules
        "net.bridge.bridge-nf-call-iptables=0",
    )
    _sysctl(host, *no_v6)
    _sysctl(client, *no_v6)
    for ns in (router, host, client):
        _ip(ns, "link", "set", "dev", "lo", "up")

    # the LAN: a bridge in the router, the host on a port of it
    _ip(router, "link", "add", "name", links.bridge, "type", "bridge", "stp_state", "0")
    _ip(router, "addr", "add", f"{plan.router_lan_address}/{lan.prefixlen}",
        "dev", links.bridge)  # fmt: skip
    _ip(router, "link", "set", "dev", links.bridge, "up")
    sh(["ip", "link", "add", "name", links.host, "netns", host, "type", "veth",
        "peer", "name", links.router_host_port, "netns", router])  # fmt: skip
    _ip(router, "link", "set", "dev", links.router_host_port, "master", links.bridge, "up")
    _ip(host, "addr", "add", f"{plan.host_address}/{lan.prefixlen}",
        "dev", links.host)  # fmt: skip
    _ip(host, "link", "set", "dev", links.host, "gso_max_segs", "1", "up")
    _ip(host, "route", "add", "default", "via", plan.router_lan_address)

    # the client's link
    sh(["ip", "link", "add", "name", links.client, "netns", client, "type", "veth",
        "peer", "name", links.router_client, "netns", router])  # fmt: skip
    _ip(router, "link", "set", "dev", links.router_client, "mtu", str(plan.client_link_mtu))
    _ip(client, "link", "set", "dev", links.client, "mtu", str(plan.client_if_mtu))
    if ad.router_client_address is None:  # lan: a bridge port
        _ip(router, "link", "set", "dev", links.router_client, "master", links.bridge, "up")
    else:
        _ip(router, "addr", "add", f"{ad.router_client_address}/{ad.client_prefix}",
            "dev", links.router_client)  # fmt: skip
        _ip(router, "link", "set", "dev", links.router_client, "up")
    _ip(client, "addr", "add", f"{ad.client_address}/{ad.client_prefix}", "dev", links.client)
    _ip(client, "link", "set", "dev", links.client, "gso_max_segs", "1", "up")
    if plan.client_site == "vpn":
        _ip(client, "route", "add", str(lan), "via", str(ad.router_client_address))
    _wait_up(host, links.host)
    _wait_up(client, links.client)


def _wait_up(ns: str, dev: str, timeout: float = 5.0) -> None:
    """Wait (bounded) until ``dev`` reports carrier, so the first SYN is not lost."""
    deadline = time.monotonic() + timeout
    for _ in range(500):
        shown = json.loads(sh(["ip", "-n", ns, "-j", "link", "show", "dev", dev]).stdout)
        if shown and shown[0].get("operstate") == "UP":
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    raise NetlabError(f"{dev} in {ns} did not come up within {timeout:g}s")


def teardown(names: dict[str, str], links: Links | None) -> None:
    """Delete the lab's links and namespaces (each step tolerates what is already gone)."""
    with LOCK:
        router = names.get("router")
        if links is not None and router is not None:
            # explicit: a namespace still held by a leaked socket would keep its links
            devs = (links.router_client, links.router_host_port, links.bridge)
            sh(
                ["ip", "-n", router, "-force", "-batch", "-"],
                check=False,
                input="".join(f"link del dev {dev}\n" for dev in devs),
            )
        for role in ("client", "host", "router"):
            if role in names:
                delete_namespace(names[role])


def names_for(run_id: str, pid: int | None = None) -> dict[str, str]:
    """role -> namespace name, e.g. ``rdplab-1a2b0-p6699-router``."""
    return {role: ns_name(run_id, role, pid) for role in ("client", "router", "host")}
