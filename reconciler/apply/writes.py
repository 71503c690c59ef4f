"""The one way apply writes accounts: `$set-accounts` with the whole list. With propagation it
goes synchronously when the compartment is small and its whole cost (120 + 100·k points) is
reserved from the quota window first — a synchronous call cut by the quota would leave a
partial compartment — and through an async job otherwise (320 + 100·k: it sleeps through a
quota reset and finishes), its charge pledged while it runs. Used by the executor's changes,
the corrections of other writers' changes, and compartment repair."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.clock import parse_iso_utc
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.costs import WRITE, set_accounts_cost
from reconciler.medplum.errors import JobError, JobTimeout, MedplumError
from reconciler.medplum.operations import parameter_value

UNKNOWN_COMPARTMENT_POINTS = 500  # pledged for a job whose compartment size is not known


@dataclass(frozen=True)
class Sent:
    retried: bool  # the request took retries: its outcome is unknown until re-read
    job: str | None = None  # the async job's status URL
    propagated: int = 0  # compartment resources the job reports it updated
    timed_out: bool = False  # the job had not finished within the job timeout
    lost_track: str = ""  # the job was accepted, then its polls failed: outcome unknown
    done_by: datetime | None = None  # the server's time by which the write was stored
    asynchronous: bool = False  # sent with Prefer: respond-async

    @property
    def unknown(self) -> bool:
        """Whether the target now carries the list is to be found by reading it."""
        return self.retried or self.timed_out or bool(self.lost_track)


def set_accounts(
    client: MedplumClient,
    ref: str,
    entries: Sequence[str | dict[str, Any]],
    *,
    propagate: bool,
    job_timeout: float,
    compartment: int | None = None,
    asynchronous: bool | None = None,
) -> Sent:
    """Send one `$set-accounts` and, async, wait for its job. `compartment`: the target's
    compartment size, when known (a synchronous call needs it: its cost is reserved first);
    `asynchronous` None: async whenever it propagates and the size is not known. Raises the
    client's errors, JobError included (a job can fail after it updated the target)."""
    if not propagate:
        result = client.set_accounts_result(ref, list(entries))
        return Sent(result.retried, done_by=result.server_time)
    if asynchronous is None:
        asynchronous = compartment is None
    if not asynchronous:
        points = set_accounts_cost(compartment or 0, propagate=True, asynchronous=False)
        hold = client.pacer.reserve(points)
        try:
            result = client.set_accounts_result(
                ref, list(entries), propagate=True, cost=points, reserved=True
            )
        finally:
            client.pacer.release(hold)
        updated = parameter_value(result.body, "resourcesUpdated")
        return Sent(
            result.retried, propagated=max(0, int(updated or 0) - 1), done_by=result.server_time
        )
    job_points = (
        set_accounts_cost(compartment, propagate=True, asynchronous=True) - WRITE
        if compartment is not None
        else client.pacer.estimated_change_points or UNKNOWN_COMPARTMENT_POINTS
    )  # the 202's own write is charged to the request; the job charges the rest
    pledge = client.pacer.pledge(job_points)
    try:
        return _async(client, ref, entries, job_timeout)
    finally:
        client.pacer.release(pledge)


def _async(
    client: MedplumClient,
    ref: str,
    entries: Sequence[str | dict[str, Any]],
    job_timeout: float,
) -> Sent:
    sent_at = time.monotonic()
    result = client.set_accounts_result(ref, list(entries), propagate=True, prefer_async=True)
    if result.status != 202:
        return Sent(result.retried, done_by=result.server_time)
    job = result.headers.get("Content-Location") or None
    try:
        done = client.wait_for_async_job(
            job or result.body, timeout=job_timeout, started_at=sent_at
        )
    except JobTimeout:
        return Sent(result.retried, job, timed_out=True, asynchronous=True)
    except JobError:
        raise  # the job said how it ended: the caller decides
    except MedplumError as exc:
        # Accepted, then the polls failed (a 401, the server gone for a while): the job may
        # well have run. Never "not updated" on a guess — the caller re-reads the target.
        return Sent(result.retried, job, lost_track=str(exc), asynchronous=True)
    updated = parameter_value(done.get("output"), "resourcesUpdated")
    finished = _time(done.get("transactionTime"))
    return Sent(
        result.retried, job, propagated=max(0, int(updated or 0) - 1), done_by=finished,
        asynchronous=True,
    )  # fmt: skip


def _time(value: object) -> datetime | None:
    try:
        return parse_iso_utc(str(value)) if value else None
    except ValueError:
        return None
