"""The one way apply writes accounts: `$set-accounts` with the whole list, and with propagation
through an async job it waits for (Medplum's jobs sleep through a quota reset and finish; a
synchronous call cut by the quota leaves a partial compartment). Used by the executor's
changes, the corrections of other writers' changes, and compartment repair."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.clock import parse_iso_utc
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import JobError, JobTimeout, MedplumError
from reconciler.medplum.operations import parameter_value


@dataclass(frozen=True)
class Sent:
    retried: bool  # the request took retries: its outcome is unknown until re-read
    job: str | None = None  # the async job's status URL
    propagated: int = 0  # compartment resources the job reports it updated
    timed_out: bool = False  # the job had not finished within the job timeout
    lost_track: str = ""  # the job was accepted, then its polls failed: outcome unknown
    done_by: datetime | None = None  # the server's time by which the write was stored

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
) -> Sent:
    """Send one `$set-accounts` (async with propagation) and wait for its job. Raises the
    client's errors, JobError included (a job can fail after it updated the target)."""
    sent_at = time.monotonic()
    result = client.set_accounts_result(
        ref, list(entries), propagate=propagate, prefer_async=propagate
    )
    if result.status != 202:
        return Sent(result.retried, done_by=result.server_time)
    job = result.headers.get("Content-Location") or None
    try:
        done = client.wait_for_async_job(
            job or result.body, timeout=job_timeout, started_at=sent_at
        )
    except JobTimeout:
        return Sent(result.retried, job, timed_out=True)
    except JobError:
        raise  # the job said how it ended: the caller decides
    except MedplumError as exc:
        # Accepted, then the polls failed (a 401, the server gone for a while): the job may
        # well have run. Never "not updated" on a guess — the caller re-reads the target.
        return Sent(result.retried, job, lost_track=str(exc))
    updated = parameter_value(done.get("output"), "resourcesUpdated")
    finished = _time(done.get("transactionTime"))
    return Sent(result.retried, job, propagated=max(0, int(updated or 0) - 1), done_by=finished)


def _time(value: object) -> datetime | None:
    try:
        return parse_iso_utc(str(value)) if value else None
    except ValueError:
        return None
