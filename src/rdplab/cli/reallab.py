"""What the lab lifecycle commands share (``rdplab up``, ``status``, ``down``, ``break``):
which real lab they work on and how its long work reports progress.

- ``--inventory FILE``: existing machines (the inventory provider; credentials by
  reference, docs/real-windows.md);
- otherwise the Vagrant lab of the ``Vagrantfile`` in ``--root`` (default: the current
  directory); ``--worker N`` picks pair N (docs/scale.md).

Progress of long work (``vagrant up`` output, snapshot restores, journal replays) goes to
stderr, one line at a time; results go to stdout (``--json``: one JSON object).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rdplab.catalog.base import Role
from rdplab.cli.app import err
from rdplab.cli.machines import InventoryOpt
from rdplab.errors import RdplabError
from rdplab.providers.remote import RemoteProvider

__all__ = ["InventoryOpt", "JsonOpt", "RootOpt", "WorkerOpt", "open_lab", "progress", "where"]

RootOpt = Annotated[
    Path,
    typer.Option("--root", help="Vagrant: the directory with the Vagrantfile (default: here)."),
]
WorkerOpt = Annotated[
    int,
    typer.Option("--worker", min=0, help="Vagrant: which client/host pair (0-7; docs/scale.md)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def progress(line: str) -> None:
    """One line of progress on stderr (never mixed into --json output)."""
    err.print(line, highlight=False, markup=False, soft_wrap=True)


def open_lab(inventory: Path | None, root: Path, worker: int = 0) -> RemoteProvider:
    """The real lab the options name (nothing is contacted yet); RdplabError otherwise."""
    from rdplab.providers.inventory import InventoryProvider
    from rdplab.providers.vagrant import VagrantProvider

    if inventory is not None:
        if worker:
            raise RdplabError("--worker picks a Vagrant pair; an inventory names its machines")
        return InventoryProvider(inventory)
    if not (root / "Vagrantfile").is_file():
        raise RdplabError(
            f"no Vagrantfile in {root.resolve()}: run from the repository (or --root DIR),"
            " or name existing machines with --inventory FILE"
        )
    return VagrantProvider(root=root, progress=progress, worker=worker)


def where(lab: RemoteProvider, role: Role) -> str:
    """The machine playing ``role``, as the user knows it."""
    from rdplab.providers.inventory import InventoryProvider
    from rdplab.providers.vagrant import VagrantProvider

    if isinstance(lab, VagrantProvider):
        return f"vagrant machine {lab.vms[role]}"
    if isinstance(lab, InventoryProvider):
        m = lab.entry(role)
        return f"{m.address}:{lab.transport_port(role)} ({m.transport})"
    return role
