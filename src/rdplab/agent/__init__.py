"""agent.ps1: the Windows side of the op vocabulary and the facts gathering.

The file ships inside the package; ``install`` puts it at AGENT_PATH on a machine once and
checks it by SHA-256 afterwards. See docs/agent-protocol.md.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

PROTOCOL = 1
AGENT_DIR = r"C:\ProgramData\rdplab"
AGENT_PATH = AGENT_DIR + r"\agent.ps1"
BACKUP_DIR = AGENT_DIR + r"\backups"


@cache
def agent_source() -> bytes:
    return resources.files("rdplab.agent").joinpath("agent.ps1").read_bytes()


@cache
def agent_sha256() -> str:
    return hashlib.sha256(agent_source()).hexdigest().upper()
