"""Transports carry one command (plus stdin) to a Windows machine and bring back its
exit code, stdout and stderr. A new transport is one module plus one line below."""

from __future__ import annotations

from importlib import import_module

from rdplab.errors import ProviderError
from rdplab.transports.base import CommandResult, Transport

TRANSPORTS = {
    "winrm": "rdplab.transports.winrm:WinRMTransport",
    "ssh": "rdplab.transports.ssh:SSHTransport",
}


def transport_class(name: str) -> type[Transport]:
    try:
        module, cls = TRANSPORTS[name].split(":")
    except KeyError:
        raise ProviderError(
            f"unknown transport {name!r} (known: {', '.join(sorted(TRANSPORTS))})"
        ) from None
    found: type[Transport] = getattr(import_module(module), cls)
    return found


__all__ = ["TRANSPORTS", "CommandResult", "Transport", "transport_class"]
