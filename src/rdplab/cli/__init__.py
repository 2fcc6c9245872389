"""The rdplab command line. Each command lives in its own module of this package and
registers itself on ``app``; a new command is one module plus one line in ``COMMANDS``.

rdplab list [--json]      every fault: id, roles, symptom, fix risk
rdplab explain FAULT      one fault's whole story, for trainees
rdplab train FAULT        the fault broken, seen, found, fixed and proven on the sim lab
rdplab run [--lab-file]   run a lab file's scenarios on the sim provider, with progress
rdplab export FAULT|--all fixes as standalone Windows PowerShell remediation scripts
rdplab probe HOST[:PORT]  walk an RDP connection from here: TCP, X.224, TLS, CredSSP version
rdplab diagnose           what breaks RDP between two machines (read-only)
rdplab serve -s ID        serve a broken scenario's host for a real RDP client to dial
rdplab netlab shell ROLE  a shell in the network lab of serve --network (client, router, host)
rdplab exercise ...       graded exercises: new, inspect, answer, check, report
rdplab fix                repair what diagnose finds, journaled, and diagnose again
rdplab rollback           undo the last fix from the journal
rdplab up|status|down     a real lab (Vagrant or --inventory): bring up, show, put away
rdplab break FAULT        put one fault on a real lab by hand (trainers)
"""

from __future__ import annotations

import sys
from importlib import import_module

import typer

from rdplab.cli.app import EXIT_USAGE, app, err

COMMANDS = (
    "listing",
    "explain",
    "train",
    "run",
    "probe",
    "diagnose",
    "serve",
    "netlab",
    "export",
    "exercise",
    "fix",
    "rollback",
    "up",
    "status",
    "down",
    "breaking",
)

for _name in COMMANDS:
    import_module(f"rdplab.cli.{_name}")


def main(argv: list[str] | None = None) -> None:
    """Run the command line. A usage mistake (a bad option value, a missing argument) is
    one ``error:`` line naming the command and the option, exit 2, like every other
    mistake; ``--help`` and a bare command print their help as usual."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="rdplab", standalone_mode=False)
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        sys.exit(130)
    except Exception as exc:  # click's ClickException family, vendored by typer
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError" or exc.exit_code == 0:
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)
        where = getattr(getattr(exc, "ctx", None), "command_path", "rdplab")
        message = " ".join(exc.format_message().split())
        err.print(f"[red]error:[/] {where}: {message}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code if exc.exit_code != 1 else EXIT_USAGE)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["COMMANDS", "app", "main"]
