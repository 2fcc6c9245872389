"""A pool of inventory labs: one lab per pytest-xdist worker, leased with a file lock.

``--lab-provider=inventory --lab-pool=pool.yaml`` (docs/scale.md)::

    labs:                    # each an ordinary inventory file (client + host), relative
      - lab-a.yaml           # to this file; its journal stays next to it
      - lab-b.yaml
    lease_timeout: 600       # seconds a worker waits for a free lab (default 600)

Each worker takes the first free lab (an exclusive ``filelock`` on
``.rdplab-pool/<lab>.lock`` next to the pool file; a lab's name is its entry) and holds it
for its whole session; the lock goes when the worker ends, even when it crashes (the
operating system drops the lock with the process). A worker that finds every lab leased
waits up to ``lease_timeout``, then stops with one line naming the pool and who holds
each lab. The same file serves
several CI jobs on one runner, or several runs by hand: they share the labs fairly.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rdplab import yamlfile
from rdplab.errors import LabFileError, ProviderError
from rdplab.workers import worker_index, worker_name

LOCK_DIR = ".rdplab-pool"
DEFAULT_LEASE_TIMEOUT = 600.0
POLL_S = 0.2


class PoolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    labs: list[str] = Field(min_length=1)
    lease_timeout: float = Field(default=DEFAULT_LEASE_TIMEOUT, ge=0, le=86400)


@dataclass(frozen=True)
class Pool:
    path: Path
    labs: tuple[Path, ...]
    lease_timeout: float
    names: tuple[str, ...] = ()  # as the pool file lists them

    @property
    def lock_dir(self) -> Path:
        return self.path.parent / LOCK_DIR

    def name(self, lab: Path) -> str:
        return self.names[self.labs.index(lab)] if self.names else lab.stem

    def lock_stem(self, lab: Path) -> str:
        return re.sub(r"[^A-Za-z0-9.-]", "_", self.name(lab))


def load_pool(path: str | os.PathLike[str]) -> Pool:
    """Read and check a pool file and every inventory it lists (errors name file, line,
    field); nothing is contacted and nothing is leased."""
    from rdplab.providers.inventory import load_inventory

    doc = yamlfile.load(Path(path))
    if not isinstance(doc.data, dict):
        raise LabFileError(str(doc.path), "a pool must be a mapping with labs", 1)
    spec = doc.validate(PoolSpec)
    labs: list[Path] = []
    for i, name in enumerate(spec.labs):
        lab = (doc.path.parent / name).resolve()
        if lab in labs:
            raise doc.error(("labs", i), f"{name} is listed twice")
        if not lab.is_file():
            raise doc.error(("labs", i), f"no inventory file {lab}")
        load_inventory(lab)
        labs.append(lab)
    return Pool(doc.path, tuple(labs), spec.lease_timeout, tuple(spec.labs))


class Lease:
    """One lab of the pool, held until ``release()`` (or the process ends)."""

    def __init__(self, pool: Pool, lab: Path, lock: object) -> None:
        self.pool = pool
        self.inventory = lab
        self.name = pool.name(lab)
        self._lock = lock

    def release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            holder = self.pool.lock_dir / f"{self.pool.lock_stem(self.inventory)}.holder"
            holder.unlink(missing_ok=True)
            lock.release()  # type: ignore[attr-defined]


def lease(
    pool: Pool,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Lease:
    """The first free lab of ``pool``; waits up to ``timeout`` (default: the pool's
    ``lease_timeout``) for one, then raises ProviderError naming who holds each."""
    try:
        from filelock import FileLock, Timeout
    except ImportError:
        raise ProviderError("a lab pool needs filelock: pip install 'rdplab[real]'") from None
    limit = pool.lease_timeout if timeout is None else timeout
    pool.lock_dir.mkdir(parents=True, exist_ok=True)
    n = len(pool.labs)
    first = worker_index() % n  # workers start on different labs: fewer collisions
    order = [pool.labs[(first + k) % n] for k in range(n)]
    start = clock()
    told = False
    while True:
        for lab in order:
            stem = pool.lock_stem(lab)
            lock = FileLock(str(pool.lock_dir / f"{stem}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            (pool.lock_dir / f"{stem}.holder").write_text(
                f"{worker_name()}, pid {os.getpid()} on {socket.gethostname()}"
                f" since {time.strftime('%H:%M:%S')}\n",
                encoding="utf-8",
            )
            return Lease(pool, lab, lock)
        waited = clock() - start
        if waited >= limit:
            held = ", ".join(f"{pool.name(lab)} ({_holder(pool, lab)})" for lab in pool.labs)
            raise ProviderError(
                f"{pool.path}: no free lab after waiting {limit:g} s (lease_timeout): every"
                f" lab is leased: {held}; add labs to the pool or run fewer workers"
            )
        if not told and progress is not None:
            progress(
                f"rdplab: every lab in {pool.path.name} is leased; waiting up to"
                f" {limit:g} s for one"
            )
            told = True
        time.sleep(min(POLL_S, max(0.0, limit - waited)))


def _holder(pool: Pool, lab: Path) -> str:
    path = pool.lock_dir / f"{pool.lock_stem(lab)}.holder"
    try:
        return "held by " + path.read_text(encoding="utf-8").strip()
    except OSError:
        return "held"


__all__ = ["Lease", "Pool", "lease", "load_pool"]
