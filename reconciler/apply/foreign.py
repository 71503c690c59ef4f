"""Accounts another writer changed while apply was writing (no lost updates).

`$set-accounts` replaces the whole list and takes no If-Match, so an unmanaged account that
another writer adds between apply's re-read and its write is overwritten — and one it removes is
written back. After the writes, apply reads each written resource's instance history and, for
each version it wrote, compares the version that write replaced with the version the write was
computed from (what apply had read): what differs between the two was done by someone else.

- an unmanaged account another writer added there, and our version lacks: put back;
- an unmanaged account another writer removed there, and our version has: taken out again.

Managed accounts are the manifests' to decide and stay as written. A correction is made only
when nobody touched that account after our write (its presence is the same in every later
version), so a later writer's decision is never undone; and our versions are recognised by
their accounts (a step's exact list) and, where the server shows it, their author — a version
we cannot prove ours is treated as another writer's, which can only make us correct less; and
a correction resting on a version whose author the server does not show is reported instead
of made (putting an account back is a grant).
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from reconciler.medplum.accounts import account_entries, entry_for


@dataclass(frozen=True)
class Version:
    version_id: str
    keys: tuple[str, ...]  # account keys in order (reference, or raw:… for other entries)
    originals: dict[str, dict[str, Any]]  # key → entry, for entries with more than a reference
    author: str | None
    deleted: bool = False


@dataclass(frozen=True)
class Correction:
    ref: str
    restore: tuple[str, ...]  # unmanaged accounts put back
    drop: tuple[str, ...]  # unmanaged accounts taken out again
    keys: tuple[str, ...]  # the list to write
    entries: list[str | dict[str, Any]]  # the same, as sent (whole entries kept)
    based_on: str = ""  # the version it was computed from


@dataclass
class Written:
    """What apply wrote to one resource: each list it sent, with the version it computed that
    list from (the re-read version for the plan's steps; the version a correction saw)."""

    ref: str
    writes: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    propagate: bool = False


def parse_history(entries: Sequence[dict[str, Any]]) -> list[Version]:
    """A history Bundle's entries (newest first) as versions, oldest first."""
    versions = []
    for entry in entries:
        resource = entry.get("resource")
        url = str((entry.get("request") or {}).get("url") or "")
        if isinstance(resource, dict):
            meta = resource.get("meta") or {}
            pairs = account_entries(resource)
            author = (meta.get("author") or {}).get("reference")
            versions.append(
                Version(
                    str(meta.get("versionId") or url.rsplit("/", 1)[-1]),
                    tuple(k for k, _ in pairs),
                    {k: o for k, o in pairs if o is not None},
                    str(author) if author else None,
                )
            )
        elif "/_history/" in url:
            versions.append(Version(url.rsplit("/", 1)[-1], (), {}, None, deleted=True))
    versions.reverse()
    return versions


def find_correction(
    written: Written,
    versions: Sequence[Version],
    managed: Set[str],
    author: str | None,
) -> Correction | str | None:
    """What to write so no other writer's unmanaged change is lost; None when nothing was
    lost; a reason string when the history cannot tell (too short, or the resource is gone)."""
    by_id = {v.version_id: i for i, v in enumerate(versions)}
    first = written.writes[0][0] if written.writes else ""
    if first not in by_id:
        return "its history does not reach the version apply read (more than 100 versions since)"
    if versions[-1].deleted:
        return None  # deleted since: nothing to keep
    restore: dict[str, tuple[int, dict[str, Any] | None]] = {}  # key → (index lost at, entry)
    drop: dict[str, int] = {}  # key → index revived at
    unproven = False  # a correction would rest on a version not shown to be ours
    next_write = 0
    for i in range(by_id[first] + 1, len(versions)):
        version, replaced = versions[i], versions[i - 1]
        match = next(
            (j for j in range(next_write, len(written.writes))
             if frozenset(version.keys) == written.writes[j][1]),
            None,
        )  # fmt: skip
        if match is None or (author and version.author and version.author != author):
            continue  # someone else's version
        next_write = match + 1
        proven = bool(author) and version.author == author
        read_at = by_id.get(written.writes[match][0])
        if read_at is None or replaced.deleted:
            continue
        read = versions[read_at]
        found = False
        for key in replaced.keys:  # added by someone else after our read, missing from ours
            if key not in managed and key not in read.keys and key not in version.keys:
                restore.setdefault(key, (i, replaced.originals.get(key)))
                found = True
        for key in read.keys:  # removed by someone else after our read, written back by us
            if key not in managed and key not in replaced.keys and key in version.keys:
                drop.setdefault(key, i)
                found = True
        unproven |= found and not proven
    # A correction only where no later version touched that account.
    keep_back = [k for k, (i, _) in restore.items() if all(k not in v.keys for v in versions[i:])]
    take_out = [k for k, i in drop.items() if all(k in v.keys for v in versions[i:])]
    if not keep_back and not take_out:
        return None
    if unproven:
        # Correcting is writing access (a put-back is a grant): only from versions shown to be
        # ours. Without an author to compare, say what may be lost instead.
        return (
            "another writer's change to " + ", ".join(keep_back + take_out) + " may have been "
            "overwritten; the server does not show which versions are apply's own (meta.author)"
        )
    current = versions[-1]
    keys = [k for k in current.keys if k not in take_out] + keep_back
    originals = {**current.originals}
    originals.update({k: e for k, (_, e) in restore.items() if k in keep_back and e})
    entries = [entry_for(k, originals) for k in keys]
    return Correction(
        written.ref, tuple(keep_back), tuple(take_out), tuple(keys), entries, current.version_id
    )
