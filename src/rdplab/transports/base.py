"""The transport interface. Implementations import their library lazily and say how to
install it when it is missing; their errors name the host and never carry a secret."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass
class CommandResult:
    rc: int
    stdout: bytes
    stderr: bytes


class Transport(ABC):
    """One connection to one Windows machine.

    ``open`` starts a session (a WinRM shell, an SSH connection) that ``run`` reuses;
    ``close`` ends it. ``commands`` counts commands run: the number that matters on real
    VMs."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.commands = 0

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def run(self, command: str, stdin: bytes | None = None) -> CommandResult: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
