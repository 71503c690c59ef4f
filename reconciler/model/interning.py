"""One object for many equal ones: a million patients' records and changes hold a handful of
distinct account tuples and steps, and an interned value costs a pointer, not a tuple (48 B)
or a Step each. Bounded, so a million all-different values cannot grow it past what it saves."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

H = TypeVar("H", bound=Hashable)

MAX_VALUES = 10_000


class Interner:
    def __init__(self, limit: int = MAX_VALUES) -> None:
        self._seen: dict[object, object] = {}
        self._limit = limit

    def __call__(self, value: H) -> H:
        found = self._seen.get(value)
        if found is not None:
            return found  # type: ignore[return-value]  # equal to value, and of its type
        if len(self._seen) < self._limit:
            self._seen[value] = value  # a race stores an equal value twice: harmless
        return value


shared = Interner()  # the process's: values are compared by equality, so sharing is safe
