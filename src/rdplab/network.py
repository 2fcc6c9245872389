"""The lab's network: names, addresses, the port and transport the client uses."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from rdplab import windows as win
from rdplab.twin.certs import IssuedCert, lab_ca_issued

Transport = Literal["tcp", "websocket"]
#: Where the client dials from: the lab LAN (no router between), outside (through the
#: router's port forward), or a VPN (routed through the router's tunnel, no NAT).
ClientSite = Literal["lan", "outside", "vpn"]
CLIENT_SITES: tuple[ClientSite, ...] = ("lan", "outside", "vpn")


@dataclass(frozen=True)
class RouterNet:
    """The router between the outside network and the lab LAN (``network.router`` in a lab
    file). Outside addresses are in RFC 5737's documentation range TEST-NET-3 (203.0.113.0/24):
    they never leave the lab (the netns provider keeps them inside its namespaces)."""

    lan_address: str = "192.168.56.1"
    outside_address: str = "203.0.113.1"
    client_outside_address: str = "203.0.113.20"
    client_vpn_address: str = "10.99.0.2"
    router_vpn_address: str = "10.99.0.1"
    #: where the host's DHCP lease moves to (port-forward-stale)
    moved_address: str = "192.168.56.23"
    #: the VPN tunnel's MTU when it is too small (vpn-mtu-blackhole): below the lab host's
    #: TLS server flight. The lab's own choice: a real certificate chain of several KB
    #: meets any tunnel below 1500; the lab's single self-signed certificate needs less.
    tunnel_mtu: int = 1000


#: The lab's machines share one subnet: the twin network is one /24 (the lab's own choice,
#: matching the 192.168.56.x addresses above); a firewall rule scoped to LocalSubnet admits
#: peers inside it.
SUBNET_PREFIX = 24


@dataclass(frozen=True)
class Network:
    host_name: str = "host.rdplab.test"
    host_address: str = "192.168.56.11"
    client_name: str = "client.rdplab.test"
    client_address: str = "192.168.56.10"
    stale_address: str = "192.168.56.99"  # where a stale record points: nobody answers
    pki_name: str = "pki.rdplab.test"
    pki_address: str = "192.168.56.5"
    port: int = win.DEFAULT_RDP_PORT
    transport: Transport = "tcp"
    extra_zone: dict[str, str] = field(default_factory=dict)
    router: RouterNet | None = None
    client_site: ClientSite = "lan"

    @property
    def dial_address(self) -> str:
        """Where the client's connection goes: the host itself on the LAN or through the
        VPN, the router's outside address (its port forward) from outside."""
        if self.client_site == "outside" and self.router is not None:
            return self.router.outside_address
        return self.host_address

    @property
    def peer_address(self) -> str:
        """The client's address as the host sees it (what a firewall rule's RemoteAddress
        scope is matched against): its LAN address, its VPN address (routed), or its
        outside address (the port forward changes the destination, not the source)."""
        if self.router is not None and self.client_site == "outside":
            return self.router.client_outside_address
        if self.router is not None and self.client_site == "vpn":
            return self.router.client_vpn_address
        return self.client_address

    @property
    def zone(self) -> dict[str, str]:
        """What the client's DNS server answers (from outside: the public answer, the
        router's outside address, for the host's name)."""
        return {
            self.host_name.lower(): self.dial_address,
            self.client_name.lower(): self.client_address,
            self.pki_name.lower(): self.pki_address,
            **{k.lower(): v for k, v in self.extra_zone.items()},
        }

    def _router_context(self) -> dict[str, str | int]:
        assert self.router is not None
        r = self.router
        return {
            "router.lan_address": r.lan_address,
            "router.outside_address": r.outside_address,
            "router.tunnel_mtu": r.tunnel_mtu,
            "host.moved_address": r.moved_address,
        }

    @property
    def subnet(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The host's subnet, for firewall rules scoped to LocalSubnet."""
        return ipaddress.ip_network(f"{self.host_address}/{SUBNET_PREFIX}", strict=False)

    @property
    def crl_url(self) -> str:
        return f"http://{self.pki_name}/crl/rdplab-ca.crl"

    @property
    def target_port(self) -> int:
        return win.WEBSOCKET_PORTS[0] if self.transport == "websocket" else self.port

    @cached_property
    def issued(self) -> IssuedCert:
        return lab_ca_issued(self.host_name.split(".")[0].upper(), self.crl_url)

    def context(self) -> dict[str, str | int]:
        """Values for ``{placeholders}`` in fault ops."""
        return {
            "host.name": self.host_name,
            "host.address": self.host_address,
            "host.stale_address": self.stale_address,
            "client.name": self.client_name,
            "pki.name": self.pki_name,
            "pki.crl_url": self.crl_url,
            "port": self.port,
            "target_port": self.target_port,
            "dial.address": self.dial_address,
            **(self._router_context() if self.router is not None else {}),
            "issued.pfx": self.issued.pfx_b64,
            "issued.thumbprint": self.issued.thumbprint,
            "issued.pfx_password": self.issued.pfx_password,
        }
