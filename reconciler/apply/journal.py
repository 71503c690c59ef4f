"""Nothing lost after a crash (design section 11). `$set-accounts` takes no If-Match, so apply
makes good other writers' changes it overwrote by reading history after its writes
(apply/corrections.py) — which a run killed mid-way never does. So before each batch of writes
apply records, where a later run finds it, what it is about to write and from which versions:
one `Basic` journal entry per batch, deleted once the run has checked its own writes. A later
apply (or `verify --repair`) that finds entries of a run that did not finish first runs the
other-writers check for them, and says what it put back."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.apply.authority import Authority
from reconciler.apply.corrections import ForeignCheck
from reconciler.apply.events import EventSink, ignore
from reconciler.apply.foreign import Write, Written
from reconciler.apply.report import Recovered, Report
from reconciler.clock import iso_utc
from reconciler.logs import get_logger
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import HTTPStatusError, MedplumError
from reconciler.model import Change

log = get_logger("reconciler.apply.journal")

JOURNAL_SYSTEM = "https://github.com/medplum-tenancy-reconciler/journal"
JOURNAL_VALUE = "apply"
EXT = "https://github.com/medplum-tenancy-reconciler/journal#"


def _ext(resource: dict[str, Any], name: str) -> str:
    for ext in resource.get("extension") or []:
        if ext.get("url") == EXT + name:
            return str(ext.get("valueString") or "")
    return ""


class Journal:
    """This run's entries: one per batch, written (through the write gate) before its writes."""

    def __init__(self, client: MedplumClient, *, run_id: str, holder: str) -> None:
        self.client = client
        self.run_id = run_id
        self.holder = holder
        self.entries: list[str] = []  # Basic ids

    def record(self, changes: Sequence[Change]) -> None:
        if not changes:
            return
        writes = [
            {"ref": c.ref, "based_on": c.version_id,
             "lists": [list(s.accounts) for s in c.steps],
             "propagate": any(s.propagate for s in c.steps)}
            for c in changes
        ]  # fmt: skip
        body = {
            "resourceType": "Basic",
            "identifier": [{"system": JOURNAL_SYSTEM, "value": JOURNAL_VALUE}],
            "code": {"text": "medplum-tenancy-reconciler apply journal"},
            "extension": [
                {"url": EXT + "run", "valueString": self.run_id},
                {"url": EXT + "holder", "valueString": self.holder},
                {"url": EXT + "since", "valueString": iso_utc()},
                {"url": EXT + "writes", "valueString": json.dumps(writes, separators=(",", ":"))},
            ],
        }
        created = self.client.request("POST", "Basic", json=body).body  # gated: it is a write
        self.entries.append(str(created["id"]))

    def close(self) -> None:
        """The run checked its writes: its entries have nothing more to say."""
        delete(self.client, self.entries)
        self.entries = []


def delete(client: MedplumClient, ids: Sequence[str]) -> None:
    for entry_id in ids:
        try:
            client.request("DELETE", f"Basic/{entry_id}", gated=False)
        except HTTPStatusError as exc:
            if exc.status not in (404, 410):
                raise


@dataclass
class Unfinished:
    """What a run that did not finish had written or was about to write."""

    run: str
    holder: str
    since: str
    entries: list[str] = field(default_factory=list)
    written: dict[str, Written] = field(default_factory=dict)

    def describe(self) -> str:
        return f"run {self.run[:8]} by {self.holder}, since {self.since}"


def unfinished(
    client: MedplumClient, *, own_run: str, done_by: datetime | None
) -> list[Unfinished]:
    """Every other run's journal entries, by run. `done_by`: the server's time now, which no
    write of those runs can be later than (they are over: this run holds the lock)."""
    runs: dict[str, Unfinished] = {}
    found = client.search_all("Basic", [("identifier", f"{JOURNAL_SYSTEM}|{JOURNAL_VALUE}")])
    for resource in found:
        run = _ext(resource, "run")
        if not run or run == own_run:
            continue
        item = runs.setdefault(
            run, Unfinished(run, _ext(resource, "holder"), _ext(resource, "since"))
        )
        item.entries.append(str(resource["id"]))
        item.since = min(item.since, _ext(resource, "since")) or item.since
        try:
            writes = json.loads(_ext(resource, "writes") or "[]")
        except ValueError:
            log.warning("an apply journal entry could not be read", entry=resource["id"])
            continue
        for w in writes:
            written = item.written.setdefault(
                str(w["ref"]), Written(str(w["ref"]), [], bool(w.get("propagate")))
            )
            written.writes += [
                Write(str(w["based_on"]), frozenset(map(str, keys)), done_by)
                for keys in w.get("lists") or []
            ]
    return sorted(runs.values(), key=lambda u: u.since)


def server_now(client: MedplumClient) -> datetime | None:
    return client.request("GET", client.base_url + "healthcheck").server_time


def recover(
    client: MedplumClient,
    authority: Authority,
    managed: Callable[[str], bool],
    *,
    own_run: str,
    parallelism: int,
    job_timeout: float,
    on_event: EventSink = ignore,
) -> list[Recovered]:
    """The other-writers check for every run that left journal entries (it crashed or lost its
    lock); each run's entries are removed once checked. Only under the apply lock: those runs
    are over, so no write of theirs is later than now on the server's clock — which with the
    exact list it wrote shows a version to be theirs (author aside: it may be another client,
    or `system`)."""
    found = unfinished(client, own_run=own_run, done_by=server_now(client))
    done: list[Recovered] = []
    for item in found:
        scratch = Report(planned=0)
        check = ForeignCheck(
            client, item.written, managed, author=None, parallelism=parallelism,
            job_timeout=job_timeout, authority=authority, on_event=on_event,
        )  # fmt: skip
        try:
            check.run(scratch)
        except MedplumError as exc:
            scratch.foreign_unchecked.append(f"{len(item.written)} resources: {exc}")
        left = scratch.foreign_unchecked + scratch.unrepaired
        done.append(
            Recovered(item.describe(), scratch.foreign_restored, scratch.foreign_dropped, left)
        )
        if not left:
            delete(client, item.entries)
        log.info(
            "checked a run that did not finish",
            run=item.run,
            writes=len(item.written),
            restored=scratch.foreign_restored,
            dropped=scratch.foreign_dropped,
        )
    return done
