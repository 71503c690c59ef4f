"""The one selector resolver: ids, identifiers, profiles and searches of any resource type —
patients, other resources, accounts and memberships — in batches, with one set of error
messages. Ids go in POST `_search` batches of 1,000, identifiers and profiles as comma lists,
searches paged; never one request per resource."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, as_completed
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl

from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import HTTPStatusError
from reconciler.medplum.reads import PAGE_SIZE, chunks
from reconciler.model import (
    AccountRef,
    Location,
    MemberSelector,
    ResourceSelector,
    Selector,
    type_of,
)

T = TypeVar("T")
R = TypeVar("R")

ID, IDENTIFIER, PROFILE, SEARCH = "id", "identifier", "profile", "search"


@dataclass(frozen=True, slots=True)
class Pick:
    """One selector of one tenant, to be resolved on the server."""

    tenant: str
    kind: str  # ID, IDENTIFIER, PROFILE or SEARCH
    type: str  # the resource type every match has
    # `Type/id` (the manifest's own string: a million id picks hold no copy of it),
    # `system|value`, a profile reference, or a query
    value: str
    location: Location
    subject: str  # how an error names the selector ("identifier urn:x|1", "search 'a=b'")


@dataclass
class Resolved(Generic[T]):
    found: dict[str, T] = field(default_factory=dict)  # every resource read, by reference
    # Per pick, what it resolved to: a tuple (one reference, mostly), not a frozenset — at a
    # million picks a 1-element frozenset costs 216 bytes, a tuple 48.
    hits: list[tuple[str, ...]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    problem_picks: list[int] = field(default_factory=list)  # the pick each problem is about


def pick_of(tenant: str, selector: Selector | ResourceSelector | MemberSelector) -> Pick:
    """A manifest selector as a pick."""
    kind = selector.kind.value
    value = selector.value
    if isinstance(selector, ResourceSelector):
        rtype = selector.type
    elif isinstance(selector, MemberSelector):
        rtype = "ProjectMembership"
    else:
        rtype = "Patient"
    return Pick(tenant, kind, rtype, value, selector.location, selector.subject)


def account_pick(tenant: str, account: AccountRef) -> Pick:
    if account.reference is not None:
        return Pick(tenant, ID, type_of(account.reference), account.reference, account.location,
                    account.subject)  # fmt: skip
    return Pick(tenant, IDENTIFIER, str(account.type), str(account.identifier), account.location,
                account.subject)  # fmt: skip


def problem(pick: Pick, what: str) -> str:
    return f"{pick.location}: error: {pick.subject} {what} (tenant {pick.tenant!r})"


def _now(fn: Callable[..., R], *args: Any) -> Future[R]:
    future: Future[R] = Future()
    future.set_result(fn(*args))
    return future


def resolve(
    client: MedplumClient,
    picks: Sequence[Pick],
    *,
    noun: str,
    convert: Callable[[dict[str, Any]], T],
    ref_of: Callable[[T], str],
    elements: Sequence[str] | None = None,
    sort_searches: bool = True,
    pool: Executor | None = None,
    on_keep: Callable[[int], None] | None = None,
    found: dict[str, T] | None = None,
    queued: Callable[[], None] | None = None,
    refs: Iterable[tuple[str, Iterable[str]]] = (),
    convert_read: Callable[[dict[str, Any], str], T] | None = None,
) -> Resolved[T]:
    """Resolve every pick. `noun` names what matches in errors ("patients"); `convert` turns a
    resource into the caller's live object; `pool` runs the reads side by side.
    `refs`: (type, `Type/id` references) read by id like id picks but with no pick each — a
    million-patient manifest's by-id selectors; the caller sees in `found` which exist.
    `convert_read`: for what is read by id, `convert` given the reference asked for (the
    manifest's own string, so the live record keeps no copy of it)."""
    submit: Callable[..., Future[Any]] = pool.submit if pool is not None else _now
    # `found`: the caller's dict to fill, which other reads running meanwhile may consult.
    out: Resolved[T] = Resolved() if found is None else Resolved(found=found)

    def keep(item: T) -> str:
        ref = ref_of(item)
        out.found[ref] = item
        if on_keep is not None:
            on_keep(len(out.found))
        return ref

    def read_ids(rtype: str, asked: list[str]) -> list[T]:
        by_id = {ref.split("/", 1)[1]: ref for ref in asked}
        found = client.iter_many(rtype, list(by_id), elements=elements)
        if convert_read is None:
            return [convert(r) for r in found]
        return [convert_read(r, by_id.get(str(r.get("id")), "")) for r in found]

    def read_tokens(rtype: str, tokens: list[str]) -> dict[str, list[T]]:
        found = client.search_by_identifiers(rtype, tokens, elements=elements)
        return {token: [convert(r) for r in hits] for token, hits in found.items()}

    def read_profiles(rtype: str, profiles: list[str]) -> dict[str, list[T]]:
        by_profile: dict[str, list[T]] = {p: [] for p in profiles}
        form = {"profile": ",".join(profiles), "_count": str(PAGE_SIZE)}
        for resource in client.post_search(rtype, form):
            ref = (resource.get("profile") or {}).get("reference")
            if ref in by_profile:
                by_profile[ref].append(convert(resource))
        return by_profile

    def read_search(rtype: str, query: str) -> tuple[list[T], str | None]:
        params = parse_qsl(query, keep_blank_values=True)
        if elements:
            params.append(("_elements", ",".join(elements)))
        try:
            found = client.search_all(rtype, params, sort_by_last_updated=sort_searches)
            return [convert(r) for r in found], None
        except HTTPStatusError as exc:
            if exc.status != 400:
                raise
            return [], exc.outcome_text

    # An ordered set per (kind, type): a list's `in` made this quadratic (16 s at 50,000).
    grouped: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)
    for pick in picks:
        if pick.kind in (ID, IDENTIFIER, PROFILE):
            grouped[(pick.kind, pick.type)][pick.value] = None
    readers = {ID: read_ids, IDENTIFIER: read_tokens, PROFILE: read_profiles}
    batches = [
        (kind, rtype, submit(readers[kind], rtype, chunk))
        for (kind, rtype), values in grouped.items()
        for chunk in chunks(list(values), PAGE_SIZE)
    ]
    # Pick-less references in batches straight from the caller's lists: no set of them all
    # (a reference in two lists — a patient of two tenants — is read twice, not held twice).
    batches += [
        (ID, rtype, submit(read_ids, rtype, list(dict.fromkeys(chunk))))
        for rtype, listed in refs
        for chunk in chunks(listed, PAGE_SIZE)
    ]
    searches = {i: submit(read_search, p.type, p.value) for i, p in enumerate(picks)
                if p.kind == SEARCH}  # fmt: skip
    if queued is not None:
        queued()  # the caller's own reads go into the pool behind these

    matches: dict[tuple[str, str, str], list[T]] = {}
    jobs = {future: (kind, rtype) for kind, rtype, future in batches}
    for future in as_completed(jobs):  # merge as they land: fewer batches held at once
        kind, rtype = jobs[future]
        if kind == ID:  # found under its reference: an id pick looks itself up there
            for item in future.result():
                keep(item)
        else:
            for value, items in future.result().items():
                matches[(kind, rtype, value)] = items

    def refuse(index: int, pick: Pick, what: str) -> None:
        out.problems.append(problem(pick, what))
        out.problem_picks.append(index)

    for index, pick in enumerate(picks):
        hits: list[str] = []
        if pick.kind == ID:
            item = out.found.get(pick.value)
            if item is None:
                refuse(index, pick, "does not exist")
            else:
                hits = [ref_of(item)]  # the stored string, not a copy per pick
        elif pick.kind in (IDENTIFIER, PROFILE):
            items = matches.get((pick.kind, pick.type, pick.value), [])
            if len(items) != 1:
                refuse(index, pick, f"matches {len(items)} {noun}, expected exactly 1")
            else:
                hits = [keep(items[0])]
        else:
            items, rejected = searches[index].result()
            if rejected is not None:
                refuse(index, pick, f"was rejected by the server: {rejected}")
            elif not items:
                refuse(index, pick, f"matches no {noun}")
            hits = [keep(item) for item in items]
        out.hits.append(tuple(dict.fromkeys(hits)))
    return out


def members_by_tenant(
    picks: Iterable[Pick], hits: Iterable[tuple[str, ...]], names: Iterable[str]
) -> dict[str, frozenset[str]]:
    """tenant name → the union of what its picks resolved to."""
    members: dict[str, set[str]] = {name: set() for name in names}
    for pick, found in zip(picks, hits, strict=True):
        members[pick.tenant].update(found)
    return {name: frozenset(refs) for name, refs in members.items()}
