"""`spec.patients` kept as columns: a million-patient tenant holds its selectors as their strings
and two small integers each, not as a million Selector and Location objects (~140 bytes a
patient). A Selector is made when one is read; the plan's hot paths read the columns."""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import overload

from reconciler.model.manifest import Location, Selector, SelectorKind

_KINDS = (SelectorKind.ID, SelectorKind.IDENTIFIER, SelectorKind.SEARCH)
_CODE = {kind: code for code, kind in enumerate(_KINDS)}
_ID = _CODE[SelectorKind.ID]


class PatientSelectors(Sequence[Selector]):
    """The selectors of one tenant's `spec.patients`, all from one file, in their order."""

    __slots__ = ("_columns", "_hash", "_kinds", "_lines", "_values", "file")

    def __init__(self, file: str) -> None:
        self.file = file
        self._values: list[str] = []
        self._kinds = bytearray()
        self._lines = array("I")
        self._columns = array("I")
        self._hash: int | None = None

    def append(self, kind: SelectorKind, value: str, line: int, column: int) -> None:
        self._values.append(value)
        self._kinds.append(_CODE[kind])
        self._lines.append(line)
        self._columns.append(column)
        self._hash = None

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, index: int) -> Selector: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Selector]: ...

    def __getitem__(self, index: int | slice) -> Selector | Sequence[Selector]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("selector index out of range")
        return Selector(_KINDS[self._kinds[index]], self._values[index], self.location(index))

    def __iter__(self) -> Iterator[Selector]:
        for index in range(len(self)):
            yield self[index]

    def location(self, index: int) -> Location:
        return Location(self.file, self._lines[index], self._columns[index])

    def ids(self) -> Iterator[tuple[int, str]]:
        """(index, `Patient/<id>`) of every by-id selector: the manifest's own strings."""
        kinds, values = self._kinds, self._values
        return ((i, values[i]) for i in range(len(values)) if kinds[i] == _ID)

    def others(self) -> Iterator[tuple[int, Selector]]:
        """(index, selector) of every identifier and search selector."""
        return ((i, self[i]) for i in range(len(self)) if self._kinds[i] != _ID)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self.file, tuple(self._values), bytes(self._kinds)))
        return self._hash

    def __repr__(self) -> str:
        return f"PatientSelectors({self.file!r}, {len(self):,} selectors)"


def id_selectors(patients: Sequence[Selector]) -> Iterator[tuple[int, str]]:
    """(index, `Patient/<id>`) of a tenant's by-id selectors, from the columns when it has them."""
    if isinstance(patients, PatientSelectors):
        return patients.ids()
    return ((i, s.value) for i, s in enumerate(patients) if s.kind is SelectorKind.ID)


def other_selectors(patients: Sequence[Selector]) -> Iterator[tuple[int, Selector]]:
    """(index, selector) of a tenant's identifier and search selectors."""
    if isinstance(patients, PatientSelectors):
        return patients.others()
    return ((i, s) for i, s in enumerate(patients) if s.kind is not SelectorKind.ID)


def selector_location(patients: Sequence[Selector], index: int) -> Location:
    if isinstance(patients, PatientSelectors):
        return patients.location(index)
    return patients[index].location
