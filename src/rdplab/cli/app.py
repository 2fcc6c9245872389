"""The Typer application every command module registers on, its consoles, and the one
way a command reports a user's mistake (one line, exit code 2 unless the error says
otherwise; never a traceback)."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from rdplab.errors import RdplabError

app = typer.Typer(
    name="rdplab",
    help="Break-fix lab for Remote Desktop error 0x904 (extended 0x7).",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

#: Exit codes shared by every command (README, "Exit codes").
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def fail(exc: RdplabError | str, code: int | None = None) -> NoReturn:
    """Print one ``error:`` line on stderr and exit (``exc.exit_code`` or 2)."""
    message = exc.message if isinstance(exc, RdplabError) else exc
    err.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    if code is None:
        code = exc.exit_code if isinstance(exc, RdplabError) else EXIT_USAGE
    raise typer.Exit(code)
