"""One error tree for rdplab. Each error carries the exit code the CLI returns.

Messages name the user's input (file, line, field, host) and never carry secrets:
the transports scrub credentials before raising.
"""

from __future__ import annotations


class RdplabError(Exception):
    """Base of every error rdplab raises on purpose. On the command line every one of them
    is exit code 2 (README, "Exit codes"): 1 means findings, never an error."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class LabFileError(RdplabError):
    """A lab, baseline or inventory file is malformed or invalid."""

    def __init__(self, path: str, message: str, line: int | None = None, field: str = "") -> None:
        where = f"{path}:{line}" if line else path
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(text)
        self.path = path
        self.line = line
        self.field = field


class UnknownFaultError(RdplabError):
    """A fault id that is not in the catalog."""


class OpError(RdplabError):
    """An op is malformed (bad name or arguments) or failed on a machine."""


class BackendError(RdplabError):
    """A machine could not be reached or answered something unusable."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host


class ProviderError(RdplabError):
    """A provider could not build, reset or tear down the lab."""
