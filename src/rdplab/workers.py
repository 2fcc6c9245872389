"""One lab per pytest-xdist worker: which worker this process is, and what its lab is.

pytest-xdist names its workers ``gw0``, ``gw1``... in ``PYTEST_XDIST_WORKER``. Worker N
drives its own lab:

- sim: its own twins (nothing to share: every process builds its own);
- vagrant: pair N of the Vagrantfile (``RDPLAB_WORKER=N``): machines ``client-wN`` and
  ``host-wN`` (pair 0 keeps ``client`` and ``host``), the lab file's addresses moved from
  192.168.56.x to 192.168.(56+N).x, and every forwarded port plus 10*N. The Vagrantfile
  computes the same (tests/vagrantfile holds the two equal for 1 to 4 workers);
- inventory: one lab leased from a pool file (``rdplab.providers.pool``).

``RDPLAB_WORKER`` set by hand pins the pair (e.g. to drive pair 2 from a shell).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from typing import TypeVar

from rdplab.catalog.base import Role
from rdplab.errors import ProviderError
from rdplab.network import Network

T = TypeVar("T")
WORKER_ENV = "RDPLAB_WORKER"
XDIST_ENV = "PYTEST_XDIST_WORKER"
#: VirtualBox 6.1.28+ allows host-only networks in 192.168.56.0/21 only (unless
#: /etc/vbox/networks.conf says otherwise): eight /24s, one pair each.
MAX_PAIRS = 8
PORT_STEP = 10


def worker_index(env: Mapping[str, str] | None = None) -> int:
    """This process's worker number: ``RDPLAB_WORKER`` if set, else pytest-xdist's
    ``gwN``, else 0 (a serial run)."""
    env = os.environ if env is None else env
    pinned = env.get(WORKER_ENV, "").strip()
    if pinned:
        if not pinned.isdigit():
            raise ProviderError(f"{WORKER_ENV} must be a whole number, got {pinned!r}")
        return int(pinned)
    m = re.fullmatch(r"gw(\d+)", env.get(XDIST_ENV, ""))
    return int(m.group(1)) if m else 0


def worker_name(env: Mapping[str, str] | None = None) -> str:
    """``gwN`` under pytest-xdist, else ``main`` (for messages and lease records)."""
    env = os.environ if env is None else env
    return env.get(XDIST_ENV) or "main"


def vagrant_machines(worker: int) -> dict[Role, str]:
    """The Vagrant machine names of pair ``worker``."""
    check_pair(worker)
    suffix = f"-w{worker}" if worker else ""
    return {"client": f"client{suffix}", "host": f"host{suffix}"}


def check_pair(worker: int) -> None:
    if not 0 <= worker < MAX_PAIRS:
        raise ProviderError(
            f"worker {worker}: the Vagrantfile has {MAX_PAIRS} client/host pairs (0 to"
            f" {MAX_PAIRS - 1}, one /24 each in 192.168.56.0/21, VirtualBox's default"
            " host-only range); run with -n 8 or fewer"
        )


def shift_address(address: str, worker: int) -> str:
    """An IPv4 address of pair 0 moved to pair ``worker``'s /24 (third octet + worker);
    anything else (a name, IPv6) unchanged."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return address
    return str(ip + worker * 256) if worker else address


def worker_network(net: Network, worker: int) -> Network:
    """The lab file's network as pair ``worker`` of the Vagrantfile has it."""
    if worker == 0:
        return net
    return dataclasses.replace(
        net,
        host_address=shift_address(net.host_address, worker),
        client_address=shift_address(net.client_address, worker),
        stale_address=shift_address(net.stale_address, worker),
        pki_address=shift_address(net.pki_address, worker),
        extra_zone={k: shift_address(v, worker) for k, v in net.extra_zone.items()},
    )


def shard(items: Sequence[T], index: int, count: int) -> list[T]:
    """Shard ``index`` (1-based) of ``count``: the items at positions index-1, index-1+count,
    ... (``--lab-shard I/N``, the benchmark's workers). Deterministic; the ``count`` shards
    are disjoint, cover ``items`` and differ in size by at most one."""
    return [x for k, x in enumerate(items) if k % count == index - 1]


def shift_port(port: int, worker: int) -> int:
    """A forwarded host port of pair 0 as pair ``worker`` has it."""
    return port + PORT_STEP * worker


__all__ = [
    "MAX_PAIRS",
    "WORKER_ENV",
    "shard",
    "shift_address",
    "shift_port",
    "vagrant_machines",
    "worker_index",
    "worker_name",
    "worker_network",
]
