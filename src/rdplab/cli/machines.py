"""What the commands that work on machines share (diagnose, fix, rollback; up, status,
down, break): the options that pick the machines, and loading them with every mistake
turned into one ``error:`` line (exit 2) by the caller's ``fail``.

- real machines: ``--inventory FILE`` (the inventory provider's format; credentials by
  reference), with the network the client uses from ``--lab-file`` (its ``network:``
  section; the built-in defaults without one) and ``--host-name/--host-address/--port``;
- the sim: ``--lab-file F --scenario ID``, a scenario's faults put on fresh twins.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from rdplab.errors import RdplabError
from rdplab.lab import Scenario
from rdplab.network import Network
from rdplab.providers.base import Provider

DEFAULT_LAB = Path("labs/rdp-0x904.yaml")
AGENT_HINT = "rerun with --install-agent to copy it there"

InventoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        help="Real machines: an inventory file (docs/real-windows.md); secrets by reference.",
    ),
]
LabFileOpt = Annotated[
    Path | None,
    typer.Option(
        help="A lab file: with --scenario, the sim lab to use; with --inventory, where the"
        " network the client uses is described (default: labs/rdp-0x904.yaml for the sim,"
        " built-in defaults for real machines)."
    ),
]
ScenarioOpt = Annotated[
    str | None, typer.Option("--scenario", help="The sim: break this scenario on fresh twins.")
]
HostNameOpt = Annotated[
    str | None, typer.Option(help="Real machines: the name the client dials for the host.")
]
HostAddressOpt = Annotated[
    str | None, typer.Option(help="Real machines: the address that name should resolve to.")
]
PortOpt = Annotated[
    int | None, typer.Option(min=1, max=65535, help="Real machines: the port the client dials.")
]
InstallAgentOpt = Annotated[
    bool,
    typer.Option(
        "--install-agent",
        help="Copy agent.ps1 to a machine where it is missing or stale (else: an error).",
    ),
]


@dataclass(frozen=True)
class Target:
    """The machines a command works on: the provider, the scenario it runs (the sim's, or
    the real machines' network as a scenario without faults), and the options that name
    them again (for the commands a report suggests)."""

    provider: Provider
    scenario: Scenario
    source: tuple[str, ...]
    real: bool

    def close(self) -> None:
        self.provider.close()


def select(
    inventory: Path | None,
    lab_file: Path | None,
    scenario: str | None,
    host_name: str | None = None,
    host_address: str | None = None,
    port: int | None = None,
    install_agent: bool = False,
) -> Target:
    """The machines the options name. Raises RdplabError naming the file, field or
    option that is wrong; nothing is contacted yet."""
    from rdplab.providers import get_provider
    from rdplab.providers.remote import RemoteProvider

    overrides = {"host_name": host_name, "host_address": host_address, "port": port}
    if inventory is not None:
        if scenario is not None:
            raise RdplabError("--scenario is for the sim; with --inventory the machines are real")
        net = _network(lab_file, {k: v for k, v in overrides.items() if v is not None})
        provider = get_provider("inventory", inventory=inventory)
        if isinstance(provider, RemoteProvider):
            provider.install_agent = install_agent
            provider.agent_hint = AGENT_HINT
        source = ["--inventory", str(inventory)]
        if lab_file is not None:
            source += ["--lab-file", str(lab_file)]
        for name, value in overrides.items():
            if value is not None:
                source += [f"--{name.replace('_', '-')}", str(value)]
        return Target(provider, as_is(net), tuple(source), real=True)
    if scenario is None:
        raise RdplabError(
            "which machines? --inventory FILE (real machines) or --lab-file F --scenario ID"
            " (the sim)"
        )
    given = [f"--{k.replace('_', '-')}" for k, v in overrides.items() if v is not None]
    if given:
        raise RdplabError(f"{', '.join(given)}: only with --inventory (the sim has its lab file)")
    path = lab_file or DEFAULT_LAB
    sc = lab_scenario(path, scenario)
    return Target(
        get_provider("sim"), sc, ("--lab-file", str(path), "--scenario", sc.id), real=False
    )


def lab_scenario(path: Path, scenario_id: str) -> Scenario:
    from rdplab.lab import load_lab

    lab = load_lab(path)
    try:
        return lab.scenario(scenario_id)
    except KeyError:
        ids = [s.id for s in lab.scenarios]
        close = difflib.get_close_matches(scenario_id, ids, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RdplabError(
            f"{path}: no scenario {scenario_id!r} ({hint}known: {', '.join(ids)})"
        ) from None


def as_is(net: Network) -> Scenario:
    """Real machines as they are: a scenario that places nothing, on their network."""
    return Scenario(
        id="as-is",
        description="the machines as they are",
        faults=(),
        baselines={},
        computer_names={},
        network=net,
    )


def _network(lab_file: Path | None, overrides: dict[str, object]) -> Network:
    net = Network()
    if lab_file is not None:
        from rdplab.lab import load_lab

        lab = load_lab(lab_file)
        net = lab.scenarios[0].network
        net = dataclasses.replace(net, transport="tcp")
    return dataclasses.replace(net, **overrides)  # type: ignore[arg-type]
