"""A network lab kept up for people: ``rdplab serve --network`` builds one from a broken
scenario and keeps it while it runs; ``rdplab netlab shell ROLE`` opens a shell inside one
of its namespaces; ``rdplab exercise check --network`` reads its router back.

The running lab is described in a state file (default ``.rdplab/netlab.json``): the
namespaces, the addresses, the server's pid. A shell started with ``ip netns exec`` reads
``/etc/netns/<namespace>/resolv.conf`` in place of ``/etc/resolv.conf`` (ip-netns(8)), so
the session writes one for the client pointing at the lab's DNS server: ``xfreerdp
/v:host.rdplab.test`` in that shell resolves the way the lab's client does.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rdplab.errors import RdplabError
from rdplab.netlab.run import pid_alive

DEFAULT_STATE = Path(".rdplab/netlab.json")
ETC_NETNS = Path("/etc/netns")


@dataclass(frozen=True)
class NetSession:
    scenario: str
    lab_file: str
    pid: int
    run_id: str
    names: dict[str, str]
    dial_address: str
    port: int
    host_name: str
    dns_server: str
    client_site: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def namespace(self, role: str) -> str:
        if role not in self.names:
            raise RdplabError(f"netlab: no role {role!r} (roles: {', '.join(sorted(self.names))})")
        return self.names[role]


def write(session: NetSession, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(session.to_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def read(path: Path) -> NetSession:
    """The running session, or one clear error: none was started, or it is gone."""
    hint = "start one: rdplab serve --network --lab-file LAB --scenario ID"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        session = NetSession(**data)
    except FileNotFoundError:
        raise RdplabError(f"{path}: no network lab is running ({hint})") from None
    except (OSError, ValueError, TypeError) as exc:
        raise RdplabError(f"{path}: not a netlab state file ({exc})") from None
    if not pid_alive(session.pid) or not Path("/run/netns", session.names["client"]).exists():
        raise RdplabError(f"{path}: the network lab of pid {session.pid} is gone ({hint})")
    return session


def write_resolv(namespace: str, dns_server: str, search: str) -> Path:
    """``/etc/netns/<namespace>/resolv.conf``: programs run in the namespace with ``ip
    netns exec`` ask the lab's DNS server."""
    folder = ETC_NETNS / namespace
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "resolv.conf"
    conf.write_text(f"# rdplab network lab\nnameserver {dns_server}\nsearch {search}\n")
    return folder


def remove_resolv(namespace: str) -> None:
    shutil.rmtree(ETC_NETNS / namespace, ignore_errors=True)


def shell_argv(session: NetSession, role: str, command: list[str] | None = None) -> list[str]:
    """argv that runs ``command`` (default: the user's shell) inside ``role``'s namespace."""
    shell = os.environ.get("SHELL") or "/bin/bash"
    return ["ip", "netns", "exec", session.namespace(role), *(command or [shell])]
