"""Running things inside a lab's network namespaces, and the process-wide bookkeeping.

Two ways in, both chosen for robustness:

* **Python code** runs in a *dedicated worker thread* that enters the namespace with
  ``setns(2)`` (through ctypes: ``os.setns`` only exists from Python 3.12) and checks,
  before running anything, that ``/proc/thread-self/ns/net`` is the namespace's inode, so
  code meant for the lab can never run in the root namespace by mistake. ``setns`` with
  ``CLONE_NEWNET`` changes only the calling thread; sockets made there stay in that
  namespace for their whole life, and threads started from there inherit it (so the
  ``RDPServer`` accept and handler threads and the DNS server's thread live in the lab).
  The main thread is never moved.
* **Programs** (``nft``, ``tcpdump``, ``sysctl``, a shell) run through
  ``ip netns exec NAME``, which enters the namespace in the child process only.

Everything the package creates carries the run id and the pid of the process that owns it
(``rdplab-<run_id>-p<pid>-<role>``), so ``cleanup_stale`` can tell a dead run's leftovers
from a live neighbour's (pytest-xdist workers share a machine). Live labs are closed by
their context manager, by ``close()``, or at interpreter exit (``atexit``).
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
PREFIX = "rdplab"
ROLES = ("client", "router", "host")
#: rdplab-<run_id>-p<pid>-<role>
NAME_RE = re.compile(rf"^{PREFIX}-(?P<run>[a-z0-9]+)-p(?P<pid>[0-9]+)-(?P<role>[a-z]+)$")
RUN_ID_RE = re.compile(r"^[a-z0-9]{1,10}$")  # interface names are at most 15 characters
COMMAND_TIMEOUT = 15.0

#: serialises topology changes and the registry of live labs within this process
LOCK = threading.RLock()
#: serialises building and stale cleanup across processes (pytest-xdist workers)
LOCK_PATH = "/run/rdplab-netlab.lock"
_held: list[int] = []  # the lock file's fd while this process holds it, once per depth
_LIVE: dict[int, Callable[[], None]] = {}
_libc = ctypes.CDLL(None, use_errno=True)


class NetlabUnavailable(Exception):  # noqa: N818 (the name the provider API uses)
    """This machine cannot run the netns lab; the message is one line with the fix."""


class NetlabError(Exception):
    """A command that builds or drives the lab failed (its stderr is in the message)."""


# -- what the machine must have ----------------------------------------------------------------
_CAP_NET_ADMIN, _CAP_SYS_ADMIN = 12, 21


def _effective_caps() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing() -> list[str]:
    """What the lab lacks here, each with its fix (empty: it can run)."""
    lacks: list[str] = []
    caps = _effective_caps()
    if not (caps >> _CAP_NET_ADMIN & 1 and caps >> _CAP_SYS_ADMIN & 1):
        lacks.append("root (CAP_NET_ADMIN and CAP_SYS_ADMIN: run as root)")
    if not os.path.exists("/proc/self/ns/net"):
        lacks.append("a kernel with network namespaces (CONFIG_NET_NS)")
    if shutil.which("ip") is None:
        lacks.append("ip (apt-get install iproute2)")
    if shutil.which("nft") is None:
        lacks.append("nft (apt-get install nftables)")
    return lacks


def require() -> None:
    """Raise ``NetlabUnavailable`` with one line saying what is missing and how to get it."""
    lacks = missing()
    if lacks:
        raise NetlabUnavailable("the netns lab needs " + "; ".join(lacks))


def require_program(program: str, package: str) -> None:
    if shutil.which(program) is None:
        raise NetlabUnavailable(f"the netns lab needs {program} (apt-get install {package})")


# -- commands ----------------------------------------------------------------------------------
def sh(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a program (bounded by ``timeout``); with ``check``, a failure raises NetlabError
    carrying the command and its stderr."""
    try:
        done = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise NetlabError(f"{' '.join(argv)}: no end within {timeout:g}s") from exc
    if check and done.returncode != 0:
        raise NetlabError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


def ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside namespace ``ns``."""
    return ["ip", "netns", "exec", ns, *argv]


def ns_name(run_id: str, role: str, pid: int | None = None) -> str:
    return f"{PREFIX}-{run_id}-p{os.getpid() if pid is None else pid}-{role}"


def list_namespaces() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    done = sh(["ip", "netns", "list"])
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


# -- Python code inside a namespace ------------------------------------------------------------
def _enter(ns: str) -> None:
    """Move the calling (worker) thread into ``ns`` and prove it did."""
    if threading.current_thread() is threading.main_thread():
        raise NetlabError("setns refused on the main thread: only worker threads change netns")
    path = os.path.join(NETNS_DIR, ns)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)
    want, have = os.stat(path), os.stat("/proc/thread-self/ns/net")
    if (want.st_dev, want.st_ino) != (have.st_dev, have.st_ino):
        raise NetlabError(f"this thread is not in {ns} after setns")


def call_in(ns: str, func: Callable[[], T], timeout: float = 30.0) -> T:
    """Run ``func`` in a fresh worker thread inside ``ns``; return its result or re-raise
    its exception. A call still running after ``timeout`` raises TimeoutError (the thread
    is a daemon and stays in the namespace)."""
    box: list[T] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            _enter(ns)
            box.append(func())
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=work, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no result from {ns} within {timeout:g}s")
    if errors:
        raise errors[0]
    return box[0]


def thread_in(ns: str, target: Callable[[], None], name: str = "") -> threading.Thread:
    """A started daemon thread running ``target`` inside ``ns`` (a long-running server).
    An error entering the namespace is raised here, not lost in the thread."""
    entered = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            _enter(ns)
        except BaseException as exc:
            errors.append(exc)
            return
        finally:
            entered.set()
        target()

    thread = threading.Thread(target=work, name=name or f"netns-{ns}", daemon=True)
    thread.start()
    if not entered.wait(10):
        raise TimeoutError(f"thread did not enter {ns} within 10s")
    if errors:
        raise errors[0]
    return thread


# -- teardown ----------------------------------------------------------------------------------
def ns_pids(ns: str) -> list[int]:
    """Processes running inside ``ns`` (all of them started by the lab)."""
    done = sh(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit() and int(p) != os.getpid()]


def stop_pids(pids: Sequence[int], grace: float = 2.0) -> None:
    """SIGTERM each pid, wait up to ``grace`` seconds, then SIGKILL what is left."""
    for pid in pids:
        with _IgnoreGone():
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = list(pids)
    for _ in range(200):
        left = [p for p in left if _alive(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    for pid in left:
        with _IgnoreGone():
            os.kill(pid, signal.SIGKILL)


def delete_namespace(ns: str) -> None:
    """Stop what runs inside ``ns`` and delete it (its veths go with it: deleting one end
    of a veth pair deletes the other)."""
    stop_pids(ns_pids(ns))
    sh(["ip", "netns", "del", ns], check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still answers kill(0): reap it if it is one
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


class _IgnoreGone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        return kind is not None and issubclass(kind, ProcessLookupError)


@contextmanager
def exclusive(timeout: float = 30.0) -> Iterator[None]:
    """Hold the netns lab's lock: this process's ``LOCK`` and an ``flock`` on
    ``LOCK_PATH`` that other processes take too, so one process's ``cleanup_stale`` never
    sees another's half-built set. Re-entrant within the process; waits at most
    ``timeout``."""
    with LOCK:
        if not _held:
            fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            deadline = time.monotonic() + timeout
            for _ in range(100_000):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        os.close(fd)
                        raise NetlabError(f"{LOCK_PATH} still held after {timeout:g}s") from None
                    time.sleep(0.01)
            _held.append(fd)
        else:
            _held.append(_held[-1])
        try:
            yield
        finally:
            fd = _held.pop()
            if not _held:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def cleanup_stale() -> list[str]:
    """Delete every rdplab namespace whose owning process is gone; return their names."""
    removed: list[str] = []
    with exclusive():
        for ns in list_namespaces():
            match = NAME_RE.match(ns)
            if match is None or pid_alive(int(match["pid"])):
                continue
            delete_namespace(ns)
            removed.append(ns)
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- live labs of this process -----------------------------------------------------------------
def register(key: int, close: Callable[[], None]) -> None:
    with LOCK:
        _LIVE[key] = close


def unregister(key: int) -> None:
    with LOCK:
        _LIVE.pop(key, None)


@atexit.register
def _close_all() -> None:
    with LOCK:
        closers = list(_LIVE.values())
    for close in closers:
        with suppress(Exception):  # at exit: close what can be closed
            close()
