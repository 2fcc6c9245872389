"""The few command lines rdplab sends to a Windows machine, in one place.

Every command stays far below cmd.exe's 8191-character limit: the agent is uploaded in
chunks of CHUNK characters, and requests travel on stdin, never on the command line.
The loopback test servers recognise exactly these commands (tests/loopback).
"""

from __future__ import annotations

import base64
import re

from rdplab.agent import AGENT_DIR, AGENT_PATH

# base64 characters per upload command. -EncodedCommand re-encodes the script as UTF-16
# base64 (about 8/3 growth), so 2400 keeps each line near 6900 of cmd.exe's 8191.
CHUNK = 2400
CMD_LIMIT = 8191
PS = "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass"
STAGING = AGENT_DIR + r"\agent.ps1.b64"


def _encoded(script: str) -> str:
    """powershell -EncodedCommand: UTF-16LE base64, so no quoting problems."""
    return f"{PS} -EncodedCommand {base64.b64encode(script.encode('utf-16-le')).decode()}"


def hash_command() -> str:
    return _encoded(
        f"if (Test-Path -LiteralPath '{AGENT_PATH}') "
        f"{{ (Get-FileHash -Algorithm SHA256 -LiteralPath '{AGENT_PATH}').Hash }} "
        "else { 'MISSING' }"
    )


def chunk_command(index: int, chunk: str) -> str:
    assert re.fullmatch(r"[A-Za-z0-9+/=]*", chunk), "chunks are base64"
    mode = "WriteAllText" if index == 0 else "AppendAllText"
    return _encoded(
        f"New-Item -ItemType Directory -Force -Path '{AGENT_DIR}' | Out-Null; "
        f"[IO.File]::{mode}('{STAGING}', '{chunk}')"
    )


def finish_command() -> str:
    return _encoded(
        f"[IO.File]::WriteAllBytes('{AGENT_PATH}', "
        f"[Convert]::FromBase64String([IO.File]::ReadAllText('{STAGING}'))); "
        f"Remove-Item -LiteralPath '{STAGING}'; "
        f"(Get-FileHash -Algorithm SHA256 -LiteralPath '{AGENT_PATH}').Hash"
    )


def call_command() -> str:
    """Run the agent; the JSON request follows on stdin."""
    return f'{PS} -File "{AGENT_PATH}"'


def decode(command: str) -> str | None:
    """The script inside an -EncodedCommand line (used by the loopback servers)."""
    m = re.search(r"-EncodedCommand ([A-Za-z0-9+/=]+)", command)
    return base64.b64decode(m.group(1)).decode("utf-16-le") if m else None


#: The switches rdplab may pass to a script it runs (exported remediation scripts).
SCRIPT_SWITCHES = ("-WhatIf", "-AllowLowerSecurity")


def script_command(parameters: tuple[str, ...] = ()) -> str:
    """Run a PowerShell script that follows on stdin, in ONE command: its bytes go to a
    temporary .ps1 (so param(), CmdletBinding and exit codes work as for a file), it runs
    with the given switches, and is removed. The exit code is the script's."""
    bad = [p for p in parameters if p not in SCRIPT_SWITCHES]
    if bad:
        raise ValueError(f"not a script switch: {bad} (known: {SCRIPT_SWITCHES})")
    switches = "".join(" " + p for p in parameters)
    return _encoded(
        "$ErrorActionPreference = 'Stop'; "
        "$f = Join-Path $env:TEMP ('rdplab-' + [guid]::NewGuid().ToString('N') + '.ps1'); "
        "$m = New-Object System.IO.MemoryStream; [Console]::OpenStandardInput().CopyTo($m); "
        "[IO.File]::WriteAllBytes($f, $m.ToArray()); $code = 1; "
        f"try {{ & $f{switches}; $code = $LASTEXITCODE }} "
        "finally { Remove-Item -LiteralPath $f -Force }; "
        "if ($null -eq $code) { $code = 0 }; exit $code"
    )


def script_parameters(command: str) -> tuple[str, ...] | None:
    """The switches of a ``script_command`` line, or None when it is not one (for the
    loopback servers)."""
    script = decode(command) if "-EncodedCommand " in command else None
    m = re.search(r"try \{ & \$f((?: -\w+)*); ", script or "")
    if m is None:
        return None
    params = tuple(m.group(1).split())
    try:
        return params if script_command(params) == command else None
    except ValueError:
        return None
