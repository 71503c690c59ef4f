"""Writes need authority (design section 11): one gate every write of a run passes — apply's
account changes and their retries, the corrections of other writers' changes, compartment
repair, membership writes, `verify --repair`. It is the client's `gate`, so nothing writes
around it: before every attempt of every write the apply lock's lease must be known held, and
before every batch one read confirms the lock record is still this run's. Once the lease is
lost, nothing more is written; the run says so and ends failed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from reconciler.apply.lock import ApplyLock
from reconciler.errors import LockLost
from reconciler.medplum.client import MedplumClient


class Authority:
    def __init__(self, lock: ApplyLock | None) -> None:
        self.lock = lock  # None: --lock=false, nothing to check (and a warning was logged)
        self.lost: str | None = None
        self._mutex = threading.Lock()

    def gate(self) -> None:
        """Before every attempt of every write: raises LockLost once the lease is lost."""
        if self.lost is not None:
            raise LockLost(self.lost)
        if self.lock is None:
            return
        try:
            self.lock.ensure_held()
        except LockLost as exc:
            self._record(exc)
            raise

    def confirm(self) -> None:
        """Before every batch of writes: the lock record is still this run's (one read)."""
        self.gate()
        if self.lock is None:
            return
        try:
            self.lock.confirm()
        except LockLost as exc:
            self._record(exc)
            raise

    def _record(self, exc: LockLost) -> None:
        with self._mutex:
            if self.lost is None:
                self.lost = str(exc)

    @contextmanager
    def installed(self, client: MedplumClient) -> Iterator[Authority]:
        """Every write `client` sends passes this gate while the block runs."""
        previous, client.gate = client.gate, self.gate
        try:
            yield self
        finally:
            client.gate = previous


UNGUARDED = Authority(None)
