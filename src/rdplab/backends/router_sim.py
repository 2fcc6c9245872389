"""The router's sim backend: router ops and facts answered by the router twin."""

from __future__ import annotations

from typing import Any

from rdplab.backends.base import Backend, CallLog
from rdplab.facts import Facts
from rdplab.ops import BatchResult, Op
from rdplab.twin.router import RouterTwin


class SimRouterBackend(Backend):
    def __init__(self, twin: RouterTwin, calls: CallLog) -> None:
        super().__init__("router", calls)
        self.twin = twin

    def apply(self, ops: list[Op]) -> BatchResult:
        self.calls.record(self.role)
        return self.twin.apply(ops)

    def gather(self, request: dict[str, Any] | None = None) -> Facts:
        """The router's facts: not a Windows facts document, so not ``Facts.parse``d; the
        network faults' detectors read ``raw`` (addresses, forwards, MTU, ICMP, MSS)."""
        self.calls.record(self.role)
        return Facts("router", self.twin.gather(request))

    def snapshot(self) -> dict[str, Any]:
        self.calls.record(self.role)
        return self.twin.snapshot()
