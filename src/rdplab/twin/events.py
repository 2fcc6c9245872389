"""The System event log, as far as the lab needs it: the errors TermService and Schannel
write when the RDP certificate's private key cannot be used.

Microsoft Learn, "Troubleshoot Azure VM RDP connection issues by Event ID" (scenario 1;
docs/sources.md s6): TermService (Microsoft-Windows-TerminalServices-RemoteConnectionManager)
logs 1057 when it fails to create a new self-signed certificate and 1058 when it fails to
replace an expired one; Schannel logs 36870 (0x8009030D) when a TLS handshake cannot reach
the server credential's private key. Unlike the rest of the machine, a log is not rolled
back with a failed batch and is not part of the state a fix may change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

LIMIT = 200  # entries kept, newest last: the log wraps like a real one


@dataclass(frozen=True)
class Event:
    provider: str
    id: int
    message: str
    time: str
    log: str = "System"
    level: str = "Error"

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.id}"

    def to_json(self) -> dict[str, Any]:
        return {
            "log": self.log,
            "provider": self.provider,
            "id": self.id,
            "level": self.level,
            "time": self.time,
            "message": self.message,
        }


@dataclass
class EventLog:
    entries: list[Event] = field(default_factory=list)

    def write(self, provider: str, event_id: int, message: str) -> None:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        self.entries.append(Event(provider, event_id, message, now))
        del self.entries[:-LIMIT]

    def query(self, wanted: Iterable[str]) -> list[dict[str, Any]]:
        """The entries whose "provider/id" is wanted, newest first (as Get-WinEvent)."""
        keys = {w.lower() for w in wanted}
        return [e.to_json() for e in reversed(self.entries) if e.key.lower() in keys]
