"""An in-process Windows machine: the twin behind the sim backend.

One module per subsystem (registry, firewall, services, certificates, dns, ip); ``machine``
composes them, applies op batches and gathers facts exactly as agent.ps1 does on Windows.
"""

from rdplab.twin.ip import IpConfig
from rdplab.twin.machine import Twin

__all__ = ["IpConfig", "Twin"]
