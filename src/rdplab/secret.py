"""Secret: a password that shows as *** in reprs, logs, reports and exception text."""

from __future__ import annotations

from typing import Any


class Secret:
    """A string that shows as ``***`` everywhere except where ``reveal()`` hands it to the
    library that needs it (pywinrm, paramiko)."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value

    def reveal(self) -> str | None:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "'***'" if self._value else "None"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickle a password
        raise TypeError("a secret cannot be pickled")
