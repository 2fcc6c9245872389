"""The lab's network: names, addresses, the port and transport the client uses."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from rdplab import windows as win
from rdplab.twin.certs import IssuedCert, lab_ca_issued

Transport = Literal["tcp", "websocket"]

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

    @property
    def zone(self) -> dict[str, str]:
        """What the lab's DNS server answers."""
        return {
            self.host_name.lower(): self.host_address,
            self.client_name.lower(): self.client_address,
            self.pki_name.lower(): self.pki_address,
            **{k.lower(): v for k, v in self.extra_zone.items()},
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
            "issued.pfx": self.issued.pfx_b64,
            "issued.thumbprint": self.issued.thumbprint,
            "issued.pfx_password": self.issued.pfx_password,
        }
