"""``rdplab serve`` as a user runs it: a subprocess whose first stdout line is the port."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def output(self) -> str:
        return "".join(self.seen)

    def line(self, timeout: float) -> str | None:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is not None:
            self.seen.append(line)
        return line

    def wait_for(self, text: str, timeout: float = 10) -> str:
        """Read stdout until a line containing ``text``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            line = self.line(left)
            if line is None:
                break
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in {self.output!r}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig``, wait for the exit, keep the rest of stdout; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        while self.line(2) is not None:
            pass
        return rc

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


def start(*args: str, timeout: float = 30) -> Served:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rdplab", "serve", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    served = Served(proc)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            served.lines.put(line)
        served.lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    first = served.line(timeout) or ""
    if not first.strip().isdigit():
        proc.kill()
        proc.wait()
        raise AssertionError(f"rdplab serve printed {first!r} first; stderr: {served.stderr()}")
    served.port = int(first)
    return served


@contextmanager
def serving(*args: str, timeout: float = 30) -> Iterator[Served]:
    served = start(*args, timeout=timeout)
    try:
        yield served
    finally:
        if served.proc.poll() is None:
            served.stop()
