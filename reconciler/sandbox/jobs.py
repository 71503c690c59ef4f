"""AsyncJob resources for `Prefer: respond-async`, run on worker threads.

A job stays `accepted` until it ends `completed`, `error` or `cancelled` (observed on Medplum
5.0.10); a failed job's `output` holds an `outcome` parameter with the OperationOutcome.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reconciler.sandbox.outcomes import FhirError, outcome
from reconciler.sandbox.store import Resource, Store, new_id, now_iso

FINAL = ("completed", "error", "cancelled")


class JobRunner:
    def __init__(
        self,
        store: Store,
        *,
        delay_ms: float = 0,
        fail_rate: float = 0.0,
        rng: random.Random | None = None,
        workers: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.sleep = sleep
        self.delay_ms = delay_ms
        self.fail_rate = fail_rate
        self.rng = rng or random.Random()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-job")
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self.completed = 0
        self.failed = 0

    def fail_orphans(self) -> int:
        """Jobs left `accepted` by a previous server process never run again: end them in
        `error` so pollers learn it (Medplum's queue would resume them; ours cannot)."""
        with self.store.reading() as conn:
            rows = conn.execute(
                "SELECT id FROM resources WHERE type='AsyncJob' AND content LIKE ?",
                ('%"status":"accepted"%',),
            ).fetchall()
        outcome_body = outcome("exception", "Job interrupted by a server restart")
        for (job_id,) in rows:
            self._finish(
                job_id,
                "error",
                {
                    "resourceType": "Parameters",
                    "parameter": [{"name": "outcome", "resource": outcome_body}],
                },
            )
        return len(rows)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, request_url: str, author: dict[str, str], work: Callable[[], Any]) -> Resource:
        job: Resource = {
            "resourceType": "AsyncJob",
            "id": new_id(),
            "status": "accepted",
            "request": request_url,
            "requestTime": now_iso(),
            "meta": {"author": author},
        }
        with self.store.transaction() as conn:
            self.store.put(conn, job)
        self._pool.submit(self._run, job["id"], work)
        return job

    def cancel(self, job_id: str) -> bool:
        job = self.store.get("AsyncJob", job_id)
        if job is None or job["status"] != "accepted":
            return False
        with self._lock:
            self._cancelled.add(job_id)
        self._finish(job_id, "cancelled", None)
        return True

    def _finish(self, job_id: str, status: str, output: Resource | None) -> None:
        with self.store.transaction() as conn:
            job = self.store.get("AsyncJob", job_id)
            if job is None or job["status"] in FINAL:
                return
            job["status"] = status
            job["transactionTime"] = now_iso()
            if output is not None:
                job["output"] = output
            self.store.put(conn, job)

    def _run(self, job_id: str, work: Callable[[], Any]) -> None:
        if self.delay_ms:
            self.sleep(self.delay_ms / 1000)
        with self._lock:
            if job_id in self._cancelled:
                return
        try:
            if self.fail_rate and self.rng.random() < self.fail_rate:
                raise FhirError(
                    500, outcome("exception", "Internal server error (injected job failure)")
                )
            output = work()
        except FhirError as exc:
            self.failed += 1
            self._finish(
                job_id,
                "error",
                {
                    "resourceType": "Parameters",
                    "parameter": [{"name": "outcome", "resource": exc.outcome}],
                },
            )
            return
        except Exception as exc:  # a sandbox bug must still end the job, not leave it hanging
            self.failed += 1
            body = outcome("exception", f"Internal server error: {type(exc).__name__}")
            self._finish(
                job_id,
                "error",
                {
                    "resourceType": "Parameters",
                    "parameter": [{"name": "outcome", "resource": body}],
                },
            )
            return
        self.completed += 1
        self._finish(job_id, "completed", output)
