"""Service Control Manager twin: status and start type per service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rdplab.errors import OpError

START_TYPES = ("Automatic", "Manual", "Disabled")


@dataclass
class Service:
    name: str
    status: str = "Running"  # Running | Stopped
    start_type: str = "Manual"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "start_type": self.start_type}


class Services:
    def __init__(self, services: dict[str, Service]) -> None:
        self._svc = {n.lower(): s for n, s in services.items()}

    def get(self, name: str) -> Service:
        svc = self._svc.get(name.lower())
        if svc is None:
            raise OpError(f"no service named {name!r}")
        return svc

    def running(self, name: str) -> bool:
        svc = self._svc.get(name.lower())
        return svc is not None and svc.status == "Running"

    def start(self, name: str) -> bool:
        svc = self.get(name)
        if svc.status == "Running":
            return False
        if svc.start_type == "Disabled":
            raise OpError(f"service {svc.name} is disabled and cannot be started")
        svc.status = "Running"
        return True

    def stop(self, name: str) -> bool:
        svc = self.get(name)
        if svc.status == "Stopped":
            return False
        svc.status = "Stopped"
        return True

    def config(self, name: str, start_type: str) -> bool:
        if start_type not in START_TYPES:
            raise OpError(f"svc.config: start_type must be one of {START_TYPES}")
        svc = self.get(name)
        if svc.start_type == start_type:
            return False
        svc.start_type = start_type
        return True

    def snapshot(self) -> dict[str, Any]:
        return {s.name: s.to_json() for s in sorted(self._svc.values(), key=lambda s: s.name)}

    @classmethod
    def from_json(cls, data: dict[str, dict[str, Any]]) -> Services:
        out = {}
        for name, v in data.items():
            st = v.get("start_type", "Manual")
            if st not in START_TYPES:
                raise OpError(f"service {name}: start_type must be one of {START_TYPES}")
            status = v.get("status", "Running")
            if status not in ("Running", "Stopped"):
                raise OpError(f"service {name}: status must be Running or Stopped")
            out[name] = Service(name, status, st)
        return cls(out)
