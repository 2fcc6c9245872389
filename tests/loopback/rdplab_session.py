"""Run ``rdplab`` commands one after another in one helper process, for tests that run
many commands against the loopback machines (the lab matrix of diagnose, fix, diagnose,
rollback). Each command goes through the real entry point (argument parsing, its own
provider, WinRM sessions and agent check, exit code), only without a new interpreter
start per command.

Protocol: one JSON array of arguments per line on stdin; one JSON object per line on
stdout: ``{"rc": int, "stdout": str, "stderr": str}``.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def run(args: list[str]) -> dict[str, object]:
    from rdplab.cli import app

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = app(args=args, prog_name="rdplab", standalone_mode=False)
        except SystemExit as exc:  # usage errors
            rc = exc.code
        except Exception as exc:  # a traceback a user would see: reported, not hidden
            import traceback

            traceback.print_exc()
            rc = f"crashed: {type(exc).__name__}"
    return {
        "rc": rc if isinstance(rc, int | str) else 0,
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
    }


def main() -> None:
    real_stdout = sys.stdout
    for line in sys.stdin:
        if line.strip():
            real_stdout.write(json.dumps(run(json.loads(line))) + "\n")
            real_stdout.flush()


if __name__ == "__main__":
    main()
