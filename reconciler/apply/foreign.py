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
version), so a later writer's decision is never undone.

Our versions are recognised by what apply knows itself, never by trusting `meta.author`
alone (Medplum 5.1.29 names `system` as the author of every `$set-accounts` version, whoever
called it): the first version after the one a write was computed from that holds exactly the
list it sent, and — when the server said when the write was done (its `Date`, or the job's
`transactionTime`) — was stored no later than that. A version whose author names another
client is never ours. A correction resting on a version neither its author nor that window
shows to be ours is reported instead of made (putting an account back is a grant).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from reconciler.clock import parse_iso_utc
from reconciler.medplum.accounts import account_entries, entry_for


@dataclass(frozen=True)
class Version:
    version_id: str
    keys: tuple[str, ...]  # account keys in order (reference, or raw:… for other entries)
    originals: dict[str, dict[str, Any]]  # key → entry, for entries with more than a reference
    author: str | None
    deleted: bool = False
    stored: datetime | None = None  # meta.lastUpdated, on the server's clock


SYSTEM = "system"  # the author Medplum 5.1.29 writes for every $set-accounts version
SLACK = timedelta(seconds=1)  # a Date header has 1-second resolution


@dataclass(frozen=True)
class Write:
    """One list apply sent: the version it was computed from, the list, and when the server
    said it was done (None: it did not say)."""

    based_on: str
    keys: frozenset[str]
    done_by: datetime | None = None


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
    writes: list[Write] = field(default_factory=list)
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
                    stored=_time(meta.get("lastUpdated")),
                )
            )
        elif "/_history/" in url:
            versions.append(Version(url.rsplit("/", 1)[-1], (), {}, None, deleted=True))
    versions.reverse()
    return versions


def _time(value: Any) -> datetime | None:
    try:
        return parse_iso_utc(str(value)) if value else None
    except ValueError:
        return None


def _ours(version: Version, write: Write, author: str | None) -> tuple[bool, bool]:
    """(may be ours, shown to be ours) for a version holding exactly `write`'s list."""
    if version.author and author and version.author not in (author, SYSTEM):
        return False, False  # another client's version
    in_time = (
        write.done_by is not None
        and version.stored is not None
        and version.stored <= write.done_by + SLACK
    )
    if write.done_by is not None and version.stored is not None and not in_time:
        return False, False  # stored after our write was done: a later writer's
    shown = (bool(author) and version.author == author) or in_time
    return True, shown


def find_correction(
    written: Written,
    versions: Sequence[Version],
    managed: Callable[[str], bool],
    author: str | None,
) -> Correction | str | None:
    """`managed(key)`: whether an account entry is the manifests' to decide (a managed
    account, or an alias of one)."""
    """What to write so no other writer's unmanaged change is lost; None when nothing was
    lost; a reason string when the history cannot tell (too short, or the resource is gone)."""
    by_id = {v.version_id: i for i, v in enumerate(versions)}
    first = written.writes[0].based_on if written.writes else ""
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
             if frozenset(version.keys) == written.writes[j].keys
             and _ours(version, written.writes[j], author)[0]),
            None,
        )  # fmt: skip
        if match is None:
            continue  # someone else's version
        next_write = match + 1
        proven = _ours(version, written.writes[match], author)[1]
        read_at = by_id.get(written.writes[match].based_on)
        if read_at is None or replaced.deleted:
            continue
        read = versions[read_at]
        found = False
        for key in replaced.keys:  # added by someone else after our read, missing from ours
            if not managed(key) and key not in read.keys and key not in version.keys:
                restore.setdefault(key, (i, replaced.originals.get(key)))
                found = True
        for key in read.keys:  # removed by someone else after our read, written back by us
            if not managed(key) and key not in replaced.keys and key in version.keys:
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
            "overwritten; neither the server's author nor its times show which versions are "
            "apply's own"
        )
    current = versions[-1]
    keys = [k for k in current.keys if k not in take_out] + keep_back
    originals = {**current.originals}
    originals.update({k: e for k, (_, e) in restore.items() if k in keep_back and e})
    entries = [entry_for(k, originals) for k in keys]
    return Correction(
        written.ref, tuple(keep_back), tuple(take_out), tuple(keys), entries, current.version_id
    )
