"""Apply a Plan: bounded parallel `$set-accounts` with async jobs, fresh re-reads right before
each batch, outcome-unknown handling, compartment verification and repair, and a report.

A failing patient never stops the others. Ctrl-C stops starting new changes and lets the ones
in flight finish; a second Ctrl-C aborts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from reconciler.apply.foreign import Correction, Written, find_correction, parse_history
from reconciler.apply.verify import expectations_for_changes, find_stragglers, repair
from reconciler.errors import ApplyFailed, LockLost
from reconciler.logs import get_logger
from reconciler.medplum.accounts import account_entries, entry_for
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import JobError, JobTimeout, MedplumError, TransportError
from reconciler.medplum.operations import parameter_value
from reconciler.medplum.reads import HISTORY_BATCH, chunks
from reconciler.model import AccountInfo, Change, LivePatient, Plan, Step
from reconciler.plan.live_resources import read_resources

log = get_logger("reconciler.apply")

Replan = Callable[[LivePatient], Change | None]
UNREACHABLE_LIMIT = 3  # changes in a row that could not reach the server, retries included
CORRECTION_ROUNDS = 3  # history re-checks after correcting another writer's lost change
EventSink = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Outcome:
    patient: str
    ok: bool
    change: Change | None
    reason: str = ""
    job: str | None = None
    duration_ms: int = 0
    propagated: int = 0  # compartment resources the server reports it updated


@dataclass
class Report:
    planned: int  # patients
    resources_planned: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: int = 0  # re-planned to no change (someone else already made it)
    verified: bool = False
    compartment_read: int = 0
    stragglers: int = 0
    repaired: int = 0
    unrepaired: list[str] = field(default_factory=list)  # "Type/id (Patient/p): reason"
    interrupted: bool = False
    lock_lost: str | None = None
    # Other writers' unmanaged account changes that a write of ours overwrote, made good again.
    foreign_restored: int = 0  # accounts put back
    foreign_dropped: int = 0  # accounts taken out again
    foreign_unchecked: list[str] = field(default_factory=list)  # "Type/id: why not checked"

    @property
    def succeeded(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok and o.change is not None]

    @property
    def succeeded_patients(self) -> list[Outcome]:
        return [o for o in self.succeeded if o.patient.startswith("Patient/")]

    @property
    def succeeded_resources(self) -> list[Outcome]:
        return [o for o in self.succeeded if not o.patient.startswith("Patient/")]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def failed_patients(self) -> list[Outcome]:
        return [o for o in self.failed if o.patient.startswith("Patient/")]

    @property
    def failed_resources(self) -> list[Outcome]:
        return [o for o in self.failed if not o.patient.startswith("Patient/")]

    @property
    def propagated(self) -> int:
        return sum(o.propagated for o in self.succeeded)

    @property
    def added(self) -> int:
        return sum(len(o.change.add) for o in self.succeeded if o.change)

    @property
    def removed(self) -> int:
        return sum(len(o.change.remove) for o in self.succeeded if o.change)

    @property
    def not_updated(self) -> int:
        return self.planned + self.resources_planned - len(self.succeeded) - self.skipped


class Executor:
    def __init__(
        self,
        client: MedplumClient,
        managed: dict[str, AccountInfo],
        *,
        parallelism: int = 10,
        job_timeout: float = 300.0,
        verify: bool = True,
        replan: Replan | None = None,
        replan_resource: Replan | None = None,
        fence: Callable[[], None] | None = None,
        on_event: EventSink | None = None,
        batch_size: int | None = None,
        author: str | None = None,
    ) -> None:
        self.client = client
        self.managed = managed
        self.parallelism = max(1, parallelism)
        self.job_timeout = job_timeout
        self.verify = verify
        self.replan = replan  # None: a saved plan, applied exactly
        self.replan_resource = replan_resource
        self.fence = fence  # raises LockLost when the apply lock is no longer known held
        self.lock_lost: str | None = None
        self.server_lost: str | None = None
        self._originals: dict[str, tuple[tuple[str, str], ...]] = {}
        self._unreachable = 0
        self._lock = threading.Lock()
        self.on_event = on_event or (lambda name, data: None)
        self.batch_size = batch_size or max(50, self.parallelism * 5)
        self.stop = threading.Event()
        self.author = author  # our versions' meta.author (the client's profile), when known
        self._written: dict[str, Written] = {}

    # --- one patient -----------------------------------------------------------------------

    def _apply_one(self, change: Change) -> Outcome:
        self.client.pacer.begin_change()
        try:
            return self._write_change(change)
        finally:
            self.client.pacer.end_change()

    def _write_change(self, change: Change) -> Outcome:
        started = time.monotonic()
        job: str | None = None
        unknown = timed_out = False
        propagated = 0
        try:
            # The lock is checked before every attempt of each write (`fence`), retries included.
            for step in change.steps:
                if step.propagate:
                    sent = time.monotonic()
                    result = self.client.set_accounts_result(
                        change.patient,
                        self._entries(change, step),
                        propagate=True,
                        prefer_async=True,
                        fence=self._check_fence,
                    )
                    unknown |= result.retried
                    if result.status == 202:
                        job = result.headers.get("Content-Location") or None
                        try:
                            done = self.client.wait_for_async_job(
                                job or result.body, timeout=self.job_timeout, started_at=sent
                            )
                            updated = parameter_value(done.get("output"), "resourcesUpdated")
                            propagated += max(0, int(updated or 0) - 1)
                        except JobTimeout:
                            unknown = timed_out = True
                else:
                    result = self.client.set_accounts_result(
                        change.patient,
                        self._entries(change, step),
                        propagate=False,
                        fence=self._check_fence,
                    )
                    unknown |= result.retried
            if unknown and not self._patient_matches(change):
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
            if self._patient_matches(change):
                return self._outcome(change, True, started, job, "")
            return self._outcome(
                change, False, started, job, f"async job {exc.status}: {exc.outcome_text}"
            )
        except (MedplumError, ApplyFailed) as exc:
            self._note_failure(exc)
            return self._outcome(change, False, started, job, str(exc))
        self._unreachable = 0
        with self._lock:
            self._written[change.patient] = Written(
                change.patient,
                [(change.version_id, frozenset(step.accounts)) for step in change.steps],
                any(step.propagate for step in change.steps),
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

    def _check_fence(self) -> None:
        if self.fence is None:
            return
        try:
            self.fence()
        except LockLost as exc:
            self.lock_lost = str(exc)
            self.stop.set()  # no new change starts; those in flight finish
            raise

    def _patient_matches(self, change: Change) -> bool:
        try:
            fresh = self.client.read_resource(*change.patient.split("/", 1))
        except MedplumError:
            return False
        return {key for key, _ in account_entries(fresh)} == set(change.after)

    def _entries(self, change: Change, step: Step) -> list[str | dict[str, Any]]:
        """The list to send: each account as it was read (display, identifier-only
        References kept whole), from the re-read right before this write."""
        originals = {
            key: json.loads(entry) for key, entry in self._originals.get(change.patient, ())
        }
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
            change.patient,
            ok,
            change,
            reason,
            job,
            round((time.monotonic() - started) * 1000),
            propagated,
        )
        # Per patient: debug when it worked (a terminal shows the progress line instead),
        # a warning when it did not, so -q still shows failures.
        (log.debug if ok else log.warning)(
            "patient",
            patient=change.patient,
            action="update",
            duration_ms=outcome.duration_ms,
            job=job.rsplit("/job/", 1)[-1].split("/")[0] if job else None,
            result="ok" if ok else "failed",
            **({"reason": reason} if reason else {}),
        )
        self.on_event(
            "change_complete" if ok else "change_errored",
            {
                (
                    "patient" if change.patient.startswith("Patient/") else "resource"
                ): change.patient,
                "add": list(change.add),
                "remove": list(change.remove),
                "duration_ms": outcome.duration_ms,
                **({"error": reason} if reason else {}),
            },
        )
        return outcome

    # --- batches ---------------------------------------------------------------------------

    def _read(self, batch: Sequence[Change]) -> dict[str, LivePatient]:
        return read_resources(self.client, [c.patient for c in batch])

    def _refresh(
        self, batch: Sequence[Change], fresh: dict[str, LivePatient], report: Report
    ) -> Iterator[Change]:
        """Drop or re-plan the patients of a freshly re-read batch whose version moved."""
        for change in batch:
            now = fresh.get(change.patient)
            if now is None:
                report.outcomes.append(
                    self._outcome(change, False, time.monotonic(), None, "deleted during apply")
                )
                continue
            if now.version_id == change.version_id:
                self._originals[change.patient] = now.originals
                yield change
                continue
            if self.replan is None:  # a saved plan: applied exactly, or not at all
                report.outcomes.append(
                    self._outcome(
                        change,
                        False,
                        time.monotonic(),
                        None,
                        f"changed during apply (version {change.version_id}, now {now.version_id})",
                    )
                )
                continue
            is_patient = change.patient.startswith("Patient/")
            replan = self.replan if is_patient else self.replan_resource
            replanned = replan(now) if replan is not None else None
            if replanned is None:
                report.skipped += 1  # _refresh runs on the submitting thread only
                log.debug("patient", patient=change.patient, action="update", result="already done")
                continue
            self._originals[change.patient] = now.originals
            yield replanned

    def run(self, plan: Plan, progress: Callable[[int, int], None] | None = None) -> Report:
        report = Report(planned=len(plan.changes), resources_planned=len(plan.resource_changes))
        # Each change in flight pledges what it will charge (its patient and, propagating, its
        # compartment): the estimate's share first, then what finished changes were seen to
        # charge, so the pacer stops before the jobs exhaust the window under our requests.
        per_change = 500
        if plan.estimate and plan.changes:
            per_change = max(100, plan.estimate.quota_points // len(plan.changes))
        self.client.pacer.estimated_change_points = per_change
        # With the jobs' charges pledged, the reserve only covers our own requests between two
        # responses: a poll (1 point) or a re-read (a search, 20) per worker.
        self.client.pacer.reserve_points = 25 * self.parallelism
        # Patients first, then other resources (Practitioners, Locations, …), in one stream.
        changes = [*plan.changes, *plan.resource_changes]
        in_flight: set[Future[Outcome]] = set()
        done = 0

        def collect(futures: set[Future[Outcome]]) -> None:
            nonlocal done
            for future in futures:
                report.outcomes.append(future.result())
                done += 1
                if progress is not None:
                    progress(done, len(report.failed))

        pool = ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="apply")
        # Each batch is re-read right before it is written; the read of the next batch runs
        # while this one is being written, so workers never wait for it.
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reread")
        batches = list(chunks(changes, self.batch_size))
        started = time.monotonic()
        try:
            upcoming = reader.submit(self._read, batches[0]) if batches else None
            for index, batch in enumerate(batches):
                if self.stop.is_set() or upcoming is None:
                    break
                try:
                    fresh = upcoming.result()
                except MedplumError as exc:
                    # The server is gone (or refuses reads): nothing more can be checked or
                    # written. Every change not yet started is reported, not dropped.
                    for change in (c for b in batches[index:] for c in b):
                        report.outcomes.append(
                            self._outcome(
                                change, False, time.monotonic(), None, f"not written: {exc}"
                            )
                        )
                    upcoming = None
                    break
                upcoming = (
                    reader.submit(self._read, batches[index + 1])
                    if index + 1 < len(batches)
                    else None
                )
                for change in self._refresh(batch, fresh, report):
                    while len(in_flight) >= self.parallelism:
                        finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        collect(finished)
                    if self.stop.is_set():
                        break
                    in_flight.add(pool.submit(self._apply_one, change))
            while in_flight:
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                collect(finished)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            reader.shutdown(wait=True, cancel_futures=True)
        made = sum(len(o.change.steps) for o in report.succeeded if o.change) + report.propagated
        log.info(
            "writes finished",
            patients=len(report.succeeded_patients),
            resources=len(report.succeeded_resources),
            writes_estimated=plan.estimate.writes if plan.estimate else None,
            writes_made=made,
            failed=len(report.failed),
            propagated=report.propagated,
            duration_ms=round((time.monotonic() - started) * 1000),
            quota_remaining=self.client.pacer.remaining,
            quota_waited_s=round(self.client.pacer.waited_s, 2),
        )
        report.lock_lost = self.lock_lost
        if self.server_lost is not None:
            started_refs = {o.patient for o in report.outcomes}
            for change in changes:
                if change.patient not in started_refs:
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
        if self._written and self.lock_lost is None and self.server_lost is None:
            try:
                self._keep_foreign_changes(report)
            except LockLost:
                report.lock_lost = self.lock_lost
            except MedplumError as exc:
                report.foreign_unchecked.append(f"{len(self._written)} resources: {exc}")
        if self.verify and report.succeeded_patients and self.server_lost is not None:
            report.unrepaired.append(
                "verification skipped: the server stopped answering; run reconciler verify "
                "when it is back"
            )
        elif self.verify and report.succeeded_patients:
            try:
                self._verify(report)
            except MedplumError as exc:  # the server went away after the writes
                report.unrepaired.append(f"verification could not run: {exc}")
        return report

    # --- other writers' changes ------------------------------------------------------------

    def _keep_foreign_changes(self, report: Report) -> None:
        """Read the history of everything written; where a write of ours overwrote another
        writer's unmanaged account change, make it good (module `foreign`)."""
        started = time.monotonic()
        pending = list(self._written.values())
        managed = set(self.managed)
        for _ in range(CORRECTION_ROUNDS):
            corrections: list[tuple[Written, Correction]] = []
            for written, history in self._histories(pending):
                if isinstance(history, str):
                    report.foreign_unchecked.append(f"{written.ref}: {history}")
                    continue
                found = find_correction(written, parse_history(history), managed, self.author)
                if isinstance(found, str):
                    report.foreign_unchecked.append(f"{written.ref}: {found}")
                elif found is not None:
                    corrections.append((written, found))
            if not corrections:
                break
            with ThreadPoolExecutor(self.parallelism, thread_name_prefix="correct") as pool:
                results = list(pool.map(lambda wc: self._correct(*wc), corrections))
            pending = []
            for (written, correction), error in zip(corrections, results, strict=True):
                if error:
                    report.unrepaired.append(
                        f"{written.ref}: could not keep another writer's account change "
                        f"({', '.join(correction.restore + correction.drop)}): {error}"
                    )
                    continue
                report.foreign_restored += len(correction.restore)
                report.foreign_dropped += len(correction.drop)
                written.writes.append((correction.based_on, frozenset(correction.keys)))
                pending.append(written)
        else:
            for written in pending:
                report.unrepaired.append(
                    f"{written.ref}: another writer keeps changing its accounts; check it by hand"
                )
        log.info(
            "other writers' changes checked",
            resources=len(self._written),
            restored=report.foreign_restored,
            dropped=report.foreign_dropped,
            unchecked=len(report.foreign_unchecked),
            duration_ms=round((time.monotonic() - started) * 1000),
        )

    def _histories(
        self, pending: Sequence[Written]
    ) -> Iterator[tuple[Written, list[dict[str, Any]] | str]]:
        by_ref = {w.ref: w for w in pending}
        # One batch Bundle per slice; the slices run side by side.
        slices = list(chunks(list(by_ref), HISTORY_BATCH))
        with ThreadPoolExecutor(self.parallelism, thread_name_prefix="history") as pool:
            for part in pool.map(lambda refs: list(self.client.read_histories(refs)), slices):
                for ref, history in part:
                    yield by_ref[ref], history

    def _correct(self, written: Written, correction: Correction) -> str:
        """One `$set-accounts` with the corrected list; "" when done, else why not."""
        try:
            sent = time.monotonic()
            result = self.client.set_accounts_result(
                written.ref,
                correction.entries,
                propagate=written.propagate,
                prefer_async=written.propagate,
                fence=self._check_fence,
            )
            if result.status == 202:
                job = result.headers.get("Content-Location") or result.body
                self.client.wait_for_async_job(job, timeout=self.job_timeout, started_at=sent)
        except LockLost:
            raise
        except MedplumError as exc:
            return str(exc)
        log.info(
            "kept another writer's account change",
            resource=written.ref,
            restored=list(correction.restore),
            dropped=list(correction.drop),
        )
        self.on_event(
            "change_corrected",
            {
                ("patient" if written.ref.startswith("Patient/") else "resource"): written.ref,
                "restored": list(correction.restore),
                "dropped": list(correction.drop),
            },
        )
        return ""

    def _verify(self, report: Report) -> None:
        expectations = expectations_for_changes(
            (o.change for o in report.succeeded_patients if o.change is not None), self.managed
        )
        started = time.monotonic()
        stragglers, read = find_stragglers(self.client, expectations)
        report.verified = True
        report.compartment_read = read
        report.stragglers = len(stragglers)
        report.repaired = repair(
            self.client,
            stragglers,
            parallelism=self.parallelism,
            on_error=lambda s, reason: report.unrepaired.append(
                f"{s.patient}: compartment resource {s.resource} not repaired: {reason}"
            ),
        )
        log.info(
            "verified",
            patients=len(expectations),
            compartment_resources=read,
            stragglers=len(stragglers),
            repaired=report.repaired,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
