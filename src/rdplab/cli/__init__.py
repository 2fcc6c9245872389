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
rdplab exercise ...       graded exercises: new, inspect, answer, check, report
rdplab fix                repair what diagnose finds, journaled, and diagnose again
rdplab rollback           undo the last fix from the journal
"""

from __future__ import annotations

from importlib import import_module

from rdplab.cli.app import app

COMMANDS = (
    "listing",
    "explain",
    "train",
    "run",
    "probe",
    "diagnose",
    "serve",
    "export",
    "exercise",
    "fix",
    "rollback",
)

for _name in COMMANDS:
    import_module(f"rdplab.cli.{_name}")


def main() -> None:
    app()


__all__ = ["COMMANDS", "app", "main"]
