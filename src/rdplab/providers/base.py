"""The provider interface: reset a lab for a scenario, hand out backends, connect."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rdplab.backends.base import Backend, CallLog
from rdplab.catalog.base import ROLES, Role
from rdplab.connection import ConnectionResult
from rdplab.errors import ProviderError
from rdplab.lab import Scenario


@dataclass
class LabMachines:
    client: Backend
    host: Backend
    calls: CallLog
    router: Backend | None = None  # a lab whose network has a router

    def backend(self, role: Role) -> Backend:
        if role == "router":
            if self.router is None:
                raise ProviderError("this lab has no router (network.router in the lab file)")
            return self.router
        return self.client if role == "client" else self.host


class Provider(ABC):
    name: str = ""
    #: what the machines are, for reports ("in-process twins; no Windows ran")
    runs_on: str = ""
    #: the cheaper-reset rule (docs/scale.md): machines the last scenario left at their
    #: baseline (``settle``) are not restored by the next ``reset``, unless this is set
    #: (``--lab-always-restore``). Providers whose reset is free (sim) restore always.
    always_restore: bool = False
    #: machines known to be at their baseline right now: role -> (baseline, computer name)
    clean: Mapping[Role, tuple[str, str]] = {}
    #: machines restored by ``reset`` over the provider's life, and by the last reset
    restores: int = 0
    last_restored: tuple[Role, ...] = ()

    @abstractmethod
    def reset(self, scenario: Scenario) -> LabMachines:
        """Bring both machines to their healthy baseline for this scenario (a machine in
        ``clean`` may be kept as it is; see ``to_restore``)."""

    def to_restore(self, scenario: Scenario) -> tuple[Role, ...]:
        """The machines a reset must restore for ``scenario``; the others are at the very
        baseline it wants. Once asked, nothing is clean any more (the scenario is about to
        change things)."""
        keep = {} if self.always_restore else self.clean
        self.clean = {}
        todo = tuple(r for r in ROLES if keep.get(r) != _identity(scenario, r))
        self.restores += len(todo)
        self.last_restored = todo
        return todo

    def settle(self, scenario: Scenario, clean: Iterable[Role]) -> None:
        """The lifecycle's verdict after a scenario: these machines are at the scenario's
        baseline (empty diff, nothing failed); the next reset may skip them."""
        if not self.always_restore:
            self.clean = {role: _identity(scenario, role) for role in clean}

    def preflight(self) -> None:  # noqa: B027 - optional hook
        """Cheap checks, before any scenario, that the lab can be reached at all (the
        credentials are there, the hypervisor is usable); one clear ProviderError if not."""

    def reach(self) -> None:  # noqa: B027 - optional hook
        """Contact the machines (bring them up) once, before the first scenario, so that an
        unreachable lab stops the run up front instead of failing every test."""

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


def _identity(scenario: Scenario, role: Role) -> tuple[str, str]:
    """What a machine must be for a scenario: its baseline and computer name."""
    return scenario.baselines[role], scenario.computer_names[role]
