"""DNS client twin: the hosts file is read first, then the resolver cache, then DNS.

Per Microsoft Learn (ipconfig /flushdns, Clear-DnsClientCache; docs/sources.md, section 8)
the cache can be emptied at any time; entries read from DNS are cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Resolution:
    address: str | None
    source: str  # hosts | cache | dns | none


@dataclass
class DnsClient:
    hosts: dict[str, str] = field(default_factory=dict)  # lower name -> address
    cache: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str, zone: Mapping[str, str]) -> Resolution:
        key = name.lower()
        if key in self.hosts:
            return Resolution(self.hosts[key], "hosts")
        if key in self.cache:
            return Resolution(self.cache[key], "cache")
        answer = zone.get(key)
        if answer is None:
            return Resolution(None, "none")
        self.cache[key] = answer
        return Resolution(answer, "dns")

    def flush_if_stale(self, name: str, expect: str) -> bool:
        cached = self.cache.get(name.lower())
        if cached is None or cached == expect:
            return False
        self.cache.clear()
        return True

    def snapshot(self) -> dict[str, Any]:
        return {
            "hosts": dict(sorted(self.hosts.items())),
            "cache": dict(sorted(self.cache.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DnsClient:
        return cls(
            hosts={k.lower(): v for k, v in (data.get("hosts") or {}).items()},
            cache={k.lower(): v for k, v in (data.get("cache") or {}).items()},
        )
