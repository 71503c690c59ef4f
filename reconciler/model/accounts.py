"""An account is its id (design section 11; medplum-api.md, "Compartments, parameters and
admin reach", observed on 5.0.10 and 5.1.29). Medplum files a resource into a compartment by
the id of each `meta.accounts` entry — whatever its type, its case or a `_history` suffix — so
`Practitioner/<north-id>` and `Organization/<NORTH-ID>/_history/1` put a patient into tenant
north exactly like `Organization/<north-id>`. Absolute URLs and display-only entries go into no
compartment. An access parameter grants by its value the same way (`valueString` with or
without the type; a `valueReference` with a `_history` suffix grants nothing)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, TypeVar

RAW_PREFIX = "raw:"  # an account entry without a reference (medplum/accounts.py)
T = TypeVar("T")


@lru_cache(maxsize=65_536)
def account_id(entry: str) -> str | None:
    """The compartment a `meta.accounts` entry puts a resource in (its id, lower case), or
    None when it puts it in none: an absolute URL, a display-only entry, no `Type/id`."""
    if entry.startswith(RAW_PREFIX) or "://" in entry:
        return None
    parts = entry.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return None
    return parts[1].lower()


def parameter_id(value: str) -> tuple[str | None, bool]:
    """(the id an access parameter's value names, whether it grants it): `Organization/x`,
    `Practitioner/x` and a bare `x` grant x; `Organization/x/_history/1` names x but grants
    nothing (the criteria it becomes match no compartment); a URL names nothing."""
    if not value or "://" in value:
        return None, False
    parts = value.split("/")
    if len(parts) == 1:
        return parts[0].lower(), True
    if not parts[1]:
        return None, False
    return parts[1].lower(), len(parts) == 2


@dataclass(frozen=True)
class Owners(Generic[T]):
    """Managed accounts by id: who owns an entry, whatever form it takes."""

    by_id: Mapping[str, tuple[str, T]]  # account id -> (canonical reference, its owner)

    @classmethod
    def of(cls, managed: Mapping[str, T]) -> Owners[T]:
        by_id: dict[str, tuple[str, T]] = {}
        for ref, owner in managed.items():
            key = account_id(ref)
            if key is not None:
                by_id[key] = (ref, owner)
        return cls(by_id)

    def owner(self, entry: str) -> tuple[str, T] | None:
        """(canonical account, owner) when `entry` is a managed account or an alias of one."""
        key = account_id(entry)
        return self.by_id.get(key) if key is not None else None

    def canonical(self, entry: str) -> str | None:
        found = self.owner(entry)
        return found[0] if found is not None else None

    def is_alias(self, entry: str) -> bool:
        """A managed account's id in another form than its canonical reference."""
        found = self.owner(entry)
        return found is not None and found[0] != entry


def same_account(a: str, b: str) -> bool:
    key = account_id(a)
    return key is not None and key == account_id(b)


def carries(entries: Iterable[str], account: str) -> bool:
    """Does a resource with these account entries sit in `account`'s compartment?"""
    key = account_id(account)
    return key is not None and any(account_id(e) == key for e in entries)


def shared_ids(refs: Iterable[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    """Pairs of (name, reference) whose references share an id: (name, ref, first name, its
    ref) for each later one. Two tenants with one id are one compartment on Medplum."""
    seen: dict[str, tuple[str, str]] = {}
    clashes = []
    for name, ref in refs:
        key = account_id(ref)
        if key is None:
            continue
        first = seen.setdefault(key, (name, ref))
        if first[0] != name:
            clashes.append((name, ref, *first))
    return clashes
