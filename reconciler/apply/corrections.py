"""After the writes: read the history of everything apply wrote and make good other writers'
unmanaged account changes that a write of ours overwrote (the rules are in `foreign`, pure)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from reconciler.apply.authority import Authority
from reconciler.apply.events import ChangeCorrected, EventSink
from reconciler.apply.foreign import Correction, Write, Written, find_correction, parse_history
from reconciler.apply.report import Report
from reconciler.apply.writes import set_accounts
from reconciler.logs import get_logger
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import MedplumError
from reconciler.medplum.reads import HISTORY_BATCH, chunks

log = get_logger("reconciler.apply")

CORRECTION_ROUNDS = 3  # history re-checks after correcting another writer's lost change


class ForeignCheck:
    def __init__(
        self,
        client: MedplumClient,
        written: dict[str, Written],
        managed: Callable[[str], bool],
        *,
        author: str | None,
        parallelism: int,
        job_timeout: float,
        authority: Authority,
        on_event: EventSink,
    ) -> None:
        self.client = client
        self.written = written
        self.managed = managed
        self.author = author
        self.parallelism = parallelism
        self.job_timeout = job_timeout
        self.authority = authority
        self.on_event = on_event

    def run(self, report: Report) -> None:
        """Read the history of everything written; where a write of ours overwrote another
        writer's unmanaged account change, make it good. LockLost ends it."""
        started = time.monotonic()
        pending = list(self.written.values())
        for _ in range(CORRECTION_ROUNDS):
            corrections: list[tuple[Written, Correction]] = []
            for written, history in self._histories(pending):
                if isinstance(history, str):
                    report.foreign_unchecked.append(f"{written.ref}: {history}")
                    continue
                found = find_correction(written, parse_history(history), self.managed, self.author)
                if isinstance(found, str):
                    report.foreign_unchecked.append(f"{written.ref}: {found}")
                elif found is not None:
                    corrections.append((written, found))
            if not corrections:
                break
            self.authority.confirm()  # LockLost ends the check: a correction is a write
            with ThreadPoolExecutor(self.parallelism, thread_name_prefix="correct") as pool:
                results = list(pool.map(lambda wc: self._correct(*wc), corrections))
            pending = []
            for (written, correction), (error, done) in zip(corrections, results, strict=True):
                if error:
                    report.unrepaired.append(
                        f"{written.ref}: could not keep another writer's account change "
                        f"({', '.join(correction.restore + correction.drop)}): {error}"
                    )
                    continue
                report.foreign_restored += len(correction.restore)
                report.foreign_dropped += len(correction.drop)
                written.writes.append(Write(correction.based_on, frozenset(correction.keys), done))
                pending.append(written)
        else:
            for written in pending:
                report.unrepaired.append(
                    f"{written.ref}: another writer keeps changing its accounts; check it by hand"
                )
        log.info(
            "other writers' changes checked",
            resources=len(self.written),
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

    def _correct(self, written: Written, correction: Correction) -> tuple[str, datetime | None]:
        """One `$set-accounts` with the corrected list: ("", when the server stored it) when
        done, else (why not, None)."""
        try:
            sent = set_accounts(
                self.client,
                written.ref,
                correction.entries,
                propagate=written.propagate,
                job_timeout=self.job_timeout,
            )
        except MedplumError as exc:  # LockLost is not one: it ends the whole check
            return str(exc), None
        if sent.timed_out or sent.lost_track:
            why = sent.lost_track or f"not finished after --job-timeout {self.job_timeout:g} s"
            return f"async job {why}", None
        log.info(
            "kept another writer's account change",
            resource=written.ref,
            restored=list(correction.restore),
            dropped=list(correction.drop),
        )
        self.on_event(ChangeCorrected(written.ref, correction.restore, correction.drop))
        return "", sent.done_by
