"""The provider interface: reset a lab for a scenario, hand out backends, connect."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from rdplab.backends.base import Backend, CallLog
from rdplab.catalog.base import Role
from rdplab.connection import ConnectionResult
from rdplab.errors import ProviderError
from rdplab.lab import Scenario


@dataclass
class LabMachines:
    client: Backend
    host: Backend
    calls: CallLog

    def backend(self, role: Role) -> Backend:
        return self.client if role == "client" else self.host


class Provider(ABC):
    name: str = ""
    #: what the machines are, for reports ("in-process twins; no Windows ran")
    runs_on: str = ""

    @abstractmethod
    def reset(self, scenario: Scenario) -> LabMachines:
        """Bring both machines to their healthy baseline for this scenario."""

    def attach(self, scenario: Scenario) -> LabMachines:
        """The machines as they are, nothing restored (``rdplab diagnose`` on real
        machines). Providers that only build fresh labs cannot."""
        raise ProviderError(
            f"the {self.name} provider builds fresh machines; it cannot diagnose machines as"
            " they are (use --inventory)"
        )

    @abstractmethod
    def connect(self, scenario: Scenario, machines: LabMachines) -> ConnectionResult:
        """Try the RDP connection client -> host; return the stage-by-stage result."""

    def place(self, scenario: Scenario) -> Scenario:
        """The scenario as it runs on this provider's lab (a vagrant worker's pair has its
        own addresses); by default unchanged."""
        return scenario

    def testinfra_host(self, role: Role) -> Any | None:
        """A pytest-testinfra Host for the machine (None: no real machine)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release what the provider holds (sessions, VMs it started)."""
