"""Apply a Plan's account changes: bounded parallel `$set-accounts` with async jobs, fresh
re-reads right before each batch, outcome-unknown handling, then the other-writers check
(apply/corrections.py) and compartment verification (apply/verify.py).

A failing change never stops the others. Ctrl-C stops starting new changes and lets the ones
in flight finish; a second Ctrl-C aborts. A lost lock ends the phase: no change starts after it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from reconciler.apply.afterwards import AfterWrites
from reconciler.apply.authority import UNGUARDED, Authority
from reconciler.apply.calls import CallModes, Concurrency
from reconciler.apply.events import ChangeFinished, EventSink, ignore
from reconciler.apply.foreign import Write, Written
from reconciler.apply.journal import Journal
from reconciler.apply.pipeline import BatchPipeline
from reconciler.apply.report import Outcome, Report
from reconciler.apply.writes import set_accounts
from reconciler.errors import ApplyFailed, LockLost
from reconciler.logs import get_logger
from reconciler.medplum.accounts import account_entries, entry_for
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import JobError, MedplumError, TransportError
from reconciler.model import AccountInfo, Change, LiveResource, Owners, Plan, Step
from reconciler.plan.records import read_resources
from reconciler.plan.versions import DURING_APPLY, moved

log = get_logger("reconciler.apply")

Replan = Callable[[LiveResource], Change | None]
EDITED = (
    "its accounts at the plan's version are not the plan's `before` list, so the plan was "
    "edited; not written"
)
UNREACHABLE_LIMIT = 3


def is_managed(managed: dict[str, AccountInfo]) -> Callable[[str], bool]:
    """Whether an account entry is the manifests' to decide: a managed account or an alias."""
    owners = Owners.of(managed)
    return lambda key: (
        owners.owner(key) is not None
    )  # changes in a row that could not reach the server, retries included


class Executor(AfterWrites, BatchPipeline):
    def __init__(
        self,
        client: MedplumClient,
        managed: dict[str, AccountInfo],
        *,
        parallelism: int = 10,
        job_timeout: float = 300.0,
        verify: bool = True,
        replan: Replan | None = None,
        authority: Authority = UNGUARDED,
        journal: Journal | None = None,
        on_event: EventSink = ignore,
        batch_size: int | None = None,
        author: str | None = None,
        propagate_with: str = "auto",
    ) -> None:
        self.client = client
        self.managed = managed
        self.parallelism = max(1, parallelism)
        self.job_timeout = job_timeout
        self.verify = verify
        self.replan = replan  # None: a saved plan, applied exactly
        self.authority = authority  # its gate is the client's; confirm() before each batch
        self.journal = journal  # records each batch before it is written (crash recovery)
        self.lock_lost: str | None = None
        self.server_lost: str | None = None
        self._originals: dict[str, tuple[tuple[str, str], ...]] = {}
        self._unreachable = 0
        self._lock = threading.Lock()
        self.on_event = on_event
        self.batch_size = batch_size  # None: the sizes of model.apply_batches
        self.stop = threading.Event()
        self.author = author  # our versions' meta.author (the client's profile), when known
        self._written: dict[str, Written] = {}
        self.modes = CallModes(client, propagate_with)  # sync or async, call by call
        self.concurrency = Concurrency(self.parallelism, throttled=lambda: client.throttled_answers)

    # --- one change ------------------------------------------------------------------------

    def _apply_one(self, change: Change) -> Outcome | None:
        """None: the lock was lost before this change could be written, or the phase was
        stopped before it started (it may have waited in the pool's queue meanwhile)."""
        if self.stop.is_set():
            return None
        try:
            outcome = self._write_change(change)
        except LockLost as exc:
            self._lost(exc)
            return None
        self.concurrency.finished(outcome.duration_ms / 1000)
        return outcome

    def _lost(self, exc: LockLost) -> None:
        with self._lock:
            if self.lock_lost is None:
                self.lock_lost = str(exc)
        self.stop.set()  # no new change starts; those in flight finish

    def _write_change(self, change: Change) -> Outcome:
        started = time.monotonic()
        job: str | None = None
        unknown = timed_out = False
        lost_track = ""
        propagated = 0
        writes: list[Write] = []
        try:
            # Every attempt of each write passes the client's gate (the lock), retries included.
            size, asynchronous = self.modes.mode(change)
            for step in change.steps:
                sent = set_accounts(
                    self.client,
                    change.ref,
                    self._entries(change, step),
                    propagate=step.propagate,
                    job_timeout=self.job_timeout,
                    compartment=size,
                    asynchronous=asynchronous,
                )
                self.modes.count(step.propagate, sent.asynchronous)
                unknown |= sent.unknown
                timed_out |= sent.timed_out
                lost_track = lost_track or sent.lost_track
                job = sent.job or job
                propagated += sent.propagated
                writes.append(Write(change.version_id, frozenset(step.accounts), sent.done_by))
            if unknown and not self._matches(change):
                if lost_track:
                    raise ApplyFailed(
                        f"the job was accepted, then following it failed ({lost_track}); "
                        "re-read, the accounts differ: run plan again"
                    )
                if timed_out:
                    raise ApplyFailed(
                        f"async job not finished after --job-timeout {self.job_timeout:g} s "
                        "(it may still complete: run plan again)"
                    )
                raise ApplyFailed("outcome unknown after retries and the accounts differ")
        except JobError as exc:
            # A job can fail after it updated the patient and part of its compartment (Medplum
            # has no rollback). If the patient already carries the new accounts, count it as
            # done: verification then finds and repairs the compartment stragglers.
            if self._matches(change):
                return self._outcome(change, True, started, job, "")
            return self._outcome(
                change, False, started, job, f"async job {exc.status}: {exc.outcome_text}"
            )
        except (MedplumError, ApplyFailed) as exc:
            self._note_failure(exc)
            return self._outcome(change, False, started, job, str(exc))
        self._unreachable = 0
        with self._lock:
            self._written[change.ref] = Written(
                change.ref, writes, any(step.propagate for step in change.steps)
            )
        return self._outcome(change, True, started, job, "", propagated=propagated)

    def _note_failure(self, exc: Exception) -> None:
        """A server that stopped answering: after a few changes in a row could not reach it
        (each already retried with backoff), start no more — report them instead of spending
        minutes retrying each one."""
        if not isinstance(exc, TransportError):
            self._unreachable = 0
            return
        with self._lock:
            self._unreachable += 1
            if self._unreachable >= UNREACHABLE_LIMIT and self.server_lost is None:
                self.server_lost = str(exc)
                self.stop.set()

    def _matches(self, change: Change) -> bool:
        try:
            fresh = self.client.read_resource(*change.ref.split("/", 1))
        except MedplumError:
            return False
        return {key for key, _ in account_entries(fresh)} == set(change.after)

    def _entries(self, change: Change, step: Step) -> list[str | dict[str, Any]]:
        """The list to send: each account as it was read (display, identifier-only
        References kept whole), from the re-read right before this write."""
        originals = {key: json.loads(entry) for key, entry in self._originals.get(change.ref, ())}
        return [entry_for(key, originals) for key in step.accounts]

    def _outcome(
        self,
        change: Change,
        ok: bool,
        started: float,
        job: str | None,
        reason: str,
        *,
        propagated: int = 0,
    ) -> Outcome:
        outcome = Outcome(
            change, ok, reason, job, round((time.monotonic() - started) * 1000), propagated
        )
        # Per change: debug when it worked (a terminal shows the progress line instead),
        # a warning when it did not, so -q still shows failures.
        (log.debug if ok else log.warning)(
            "patient",
            patient=change.ref,
            action="update",
            duration_ms=outcome.duration_ms,
            job=job.rsplit("/job/", 1)[-1].split("/")[0] if job else None,
            result="ok" if ok else "failed",
            **({"reason": reason} if reason else {}),
        )
        self.on_event(
            ChangeFinished(change.ref, ok, change.add, change.remove, outcome.duration_ms, reason)
        )
        return outcome

    # --- batches ---------------------------------------------------------------------------

    def _read(self, batch: Sequence[Change]) -> dict[str, LiveResource]:
        """A batch re-read right before it is written, with its patients' compartment sizes
        (one search: what a synchronous call's cost is computed from) read at the same time,
        on a thread of their own: the preparation takes one read's time, not two."""
        failed: list[BaseException] = []

        def read_sizes() -> None:
            try:
                self.modes.read_sizes(batch)  # a server error there: unknown sizes, async
            except BaseException as exc:  # anything else fails the batch, as it would inline
                failed.append(exc)

        sizes = threading.Thread(target=read_sizes, name="sizes")
        sizes.start()
        try:
            fresh = read_resources(self.client, [c.ref for c in batch])
        finally:
            sizes.join()
        if failed:
            raise failed[0]
        return fresh

    def _refresh(
        self, batch: Sequence[Change], fresh: dict[str, LiveResource], report: Report
    ) -> Iterator[Change]:
        """Drop or re-plan the changes of a freshly re-read batch whose version moved."""
        for change in batch:
            now = fresh.get(change.ref)
            reason = moved(change.version_id, now.version_id if now else None, since=DURING_APPLY)
            if reason is None and now is not None:
                if set(now.accounts) != set(change.before):
                    # At the plan's own version the server holds other accounts than the plan
                    # says: the plan was edited (its "kept" accounts would be written).
                    report.outcomes.append(
                        self._outcome(change, False, time.monotonic(), None, EDITED)
                    )
                    continue
                self._originals[change.ref] = now.originals
                yield change
                continue
            if now is None or self.replan is None:  # a saved plan: exactly, or not at all
                report.outcomes.append(
                    self._outcome(change, False, time.monotonic(), None, str(reason))
                )
                continue
            replanned = self.replan(now)
            if replanned is None:
                report.skipped += 1  # _refresh runs on the submitting thread only
                log.debug("patient", patient=change.ref, action="update", result="already done")
                continue
            self._originals[change.ref] = now.originals
            yield replanned

    def run(self, plan: Plan, progress: Callable[[int, int], None] | None = None) -> Report:
        report = Report(planned=len(plan.changes), resources_planned=len(plan.resource_changes))
        self.modes.pace(plan, self.parallelism)
        # Patients first, then other resources (Practitioners, Locations, …), in one stream.
        changes = [*plan.changes, *plan.resource_changes]
        started = time.monotonic()
        self._write_all(changes, report, progress)
        made = sum(len(o.change.steps) for o in report.succeeded) + report.propagated
        log.info(
            "writes finished",
            patients=len(report.succeeded_patients),
            resources=len(report.succeeded_resources),
            writes_estimated=plan.estimate.writes if plan.estimate else None,
            writes_made=made,
            sync_calls=self.modes.counts["sync"],
            async_calls=self.modes.counts["async"],
            in_flight=self.concurrency.history,
            failed=len(report.failed),
            propagated=report.propagated,
            duration_ms=round((time.monotonic() - started) * 1000),
            quota_remaining=self.client.pacer.remaining,
            quota_waited_s=round(self.client.pacer.waited_s, 2),
        )
        report.lock_lost = self.lock_lost
        if self.server_lost is not None:
            started_refs = {o.ref for o in report.outcomes}
            for change in changes:
                if change.ref not in started_refs:
                    report.outcomes.append(
                        self._outcome(
                            change,
                            False,
                            time.monotonic(),
                            None,
                            f"not written: the server stopped answering ({self.server_lost})",
                        )
                    )
        report.interrupted = (
            self.stop.is_set() and self.lock_lost is None and self.server_lost is None
        )
        self._after_writes(report)
        report.lock_lost = self.lock_lost
        self.modes.settle(report, plan)
        return report
