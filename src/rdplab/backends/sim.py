"""The sim backend: ops and gathers answered by an in-process twin."""

from __future__ import annotations

from typing import Any

from rdplab.backends.base import Backend, CallLog
from rdplab.facts import Facts
from rdplab.ops import BatchResult, Op
from rdplab.twin import Twin


class SimBackend(Backend):
    def __init__(self, role: str, twin: Twin, calls: CallLog) -> None:
        super().__init__(role, calls)
        self.twin = twin

    def apply(self, ops: list[Op]) -> BatchResult:
        self.calls.record(self.role)
        return self.twin.apply(ops)

    def gather(self, request: dict[str, Any] | None = None) -> Facts:
        self.calls.record(self.role)
        return Facts.parse(self.role, self.twin.gather(request))

    def snapshot(self) -> dict[str, Any]:
        self.calls.record(self.role)
        return self.twin.snapshot()
