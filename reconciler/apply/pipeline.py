"""The executor's batches, pipelined: while one batch is being written, the next is made ready
on a thread of its own — re-read with its compartment sizes (the two reads at once),
re-planned where it moved, and recorded in the crash journal — so workers never wait at a
batch boundary. The lock is confirmed right before each batch: the read is sent as the last
calls of the batch before are handed out (one call's time ahead, on a thread of its own, so
the workers keep busy during it; the first batch's goes with its preparation), and the batch
starts only once it answered; a lost lock stops the writes at the batch being written. A mixin
of the Executor (apply/executor.py), kept apart by job."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from reconciler.apply.authority import Authority
from reconciler.apply.calls import Concurrency
from reconciler.apply.journal import Journal
from reconciler.apply.report import Outcome, Report
from reconciler.errors import LockLost
from reconciler.medplum.errors import MedplumError
from reconciler.model import Change, LiveResource, apply_batches

QUEUED_AHEAD = 2  # changes waiting in the pool's queue at the full window (_handed_out_limit)


@dataclass
class Prepared:
    """One batch made ready to write, or why it cannot be."""

    ready: list[Change] = field(default_factory=list)
    dropped: list[Outcome] = field(default_factory=list)  # refused at the re-read
    skipped: int = 0  # re-planned to no change
    lock_lost: LockLost | None = None
    read_error: MedplumError | None = None  # the server is gone: nothing more is written
    journal_error: MedplumError | None = None  # this batch is not written


class BatchPipeline:
    authority: Authority
    journal: Journal | None
    concurrency: Concurrency
    parallelism: int
    batch_size: int | None  # None: model.apply_batches
    stop: threading.Event

    # The Executor's own (apply/executor.py):
    def _read(self, batch: Sequence[Change]) -> dict[str, LiveResource]:
        raise NotImplementedError

    def _refresh(
        self, batch: Sequence[Change], fresh: dict[str, LiveResource], report: Report
    ) -> Iterator[Change]:
        raise NotImplementedError

    def _apply_one(self, change: Change) -> Outcome | None:
        raise NotImplementedError

    def _lost(self, exc: LockLost) -> None:
        raise NotImplementedError

    def _outcome(
        self, change: Change, ok: bool, started: float, job: str | None, reason: str
    ) -> Outcome:
        raise NotImplementedError

    def _batches(self, changes: list[Change]) -> list[list[Change]]:
        """A small first batch — the writes start after one short preparation, not a full
        one — then full ones: model.apply_batches, which the estimate counts by too."""
        out, start = [], 0
        for size in apply_batches(len(changes), self.parallelism, self.batch_size):
            out.append(changes[start : start + size])
            start += size
        return out

    def _handed_out_limit(self) -> int:
        """How many changes may be handed to the workers at once. At the full window a few
        wait in the pool's queue: a worker that finishes takes the next at once, instead of
        waiting for this thread to wake up and hand one out (9.5 of 10 in flight on average
        before, measured). Below it (backed off), exactly the window: the pool has more
        workers than the window allows to run."""
        limit = self.concurrency.limit
        return limit + QUEUED_AHEAD if limit >= self.parallelism else limit

    def _prepare(self, batch: Sequence[Change]) -> Prepared:
        prepared = Prepared()
        try:
            fresh = self._read(batch)
        except MedplumError as exc:
            prepared.read_error = exc
            return prepared
        holder = Report(planned=0)  # outcomes of the re-read, merged on the writing thread
        prepared.ready = list(self._refresh(batch, fresh, holder))
        prepared.dropped, prepared.skipped = holder.outcomes, holder.skipped
        try:
            if self.journal is not None:  # what this batch writes, before it writes
                self.journal.record(prepared.ready)
        except LockLost as exc:
            prepared.lock_lost = exc
        except MedplumError as exc:  # no journal, no write: a crash would lose track
            prepared.journal_error = exc
        return prepared

    def _write_all(
        self,
        changes: list[Change],
        report: Report,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        # Each handed-out change's future lands in `finished` when it is done (its callback,
        # on the worker): this thread blocks on one queue, O(1) a change. concurrent.futures
        # .wait(FIRST_COMPLETED) instead sets a waiter on every future in flight each time —
        # with py-spy --gil, this thread held the GIL 37 % of the write phase, the workers
        # waiting for it to read their answers.
        finished: queue.SimpleQueue[Future[Outcome | None]] = queue.SimpleQueue()
        in_flight = 0
        # Counted here: report.failed is a scan, and once per change it would be O(n²).
        done, failed = 0, len(report.failed)

        def hand_out(change: Change) -> None:
            nonlocal in_flight
            pool.submit(self._apply_one, change).add_done_callback(finished.put)
            in_flight += 1

        def collect() -> None:
            """One finished change (waiting for it), then any others already finished."""
            nonlocal in_flight, done, failed
            future: Future[Outcome | None] | None = finished.get()
            while future is not None:
                in_flight -= 1
                outcome = future.result()
                if outcome is not None:  # None: not started, the lock was lost
                    report.outcomes.append(outcome)
                    done += 1
                    failed += not outcome.ok
                    if progress is not None:
                        progress(done, failed)
                try:
                    future = finished.get_nowait()
                except queue.Empty:
                    future = None

        def not_written(items: Sequence[Change], why: str) -> None:
            for change in items:
                report.outcomes.append(self._outcome(change, False, time.monotonic(), None, why))

        pool = ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="apply")
        preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
        confirmer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confirm")
        confirmed: Future[None] | None = None  # the lock read for the next batch, under way
        batches = self._batches(changes)
        try:
            upcoming = preparer.submit(self._prepare, batches[0]) if batches else None
            if upcoming is not None:  # the first batch's lock read goes with its preparation
                confirmed = confirmer.submit(self.authority.confirm)
            for index in range(len(batches)):
                if self.stop.is_set() or upcoming is None:
                    break
                prepared = upcoming.result()
                if confirmed is None:
                    confirmed = confirmer.submit(self.authority.confirm)
                try:  # the lock is still this run's, read since the last batch was handed out
                    confirmed.result()
                except LockLost as exc:
                    prepared.lock_lost = exc
                confirmed = None
                if prepared.lock_lost is not None:
                    self._lost(prepared.lock_lost)
                    break
                if prepared.read_error is not None:
                    # The server is gone (or refuses reads): nothing more can be checked or
                    # written. Every change not yet started is reported, not dropped.
                    not_written([c for b in batches[index:] for c in b],
                                f"not written: {prepared.read_error}")  # fmt: skip
                    break
                report.outcomes += prepared.dropped
                failed += sum(not o.ok for o in prepared.dropped)
                report.skipped += prepared.skipped
                more = index + 1 < len(batches)
                upcoming = preparer.submit(self._prepare, batches[index + 1]) if more else None
                if prepared.journal_error is not None:
                    not_written(prepared.ready, "not written: the apply journal could not be "
                                f"written ({prepared.journal_error})")  # fmt: skip
                    continue
                # The next batch's lock read goes out with the last `limit` calls of this one:
                # about one call before that batch starts, and no worker waits for it.
                tail = max(0, len(prepared.ready) - self.concurrency.limit)
                for position, change in enumerate(prepared.ready):
                    while in_flight >= self._handed_out_limit():
                        collect()
                    if self.stop.is_set():
                        break
                    if position == tail and more:
                        confirmed = confirmer.submit(self.authority.confirm)
                    hand_out(change)
            while in_flight:
                collect()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            preparer.shutdown(wait=True, cancel_futures=True)
            confirmer.shutdown(wait=True, cancel_futures=True)
