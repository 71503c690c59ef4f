"""After apply's writes: the other-writers check of everything written (and, once it ran,
the crash journal closed), then compartment verification — each a reader first and a writer
after, so each confirms the run still holds the lock, and a lost lock ends it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from reconciler.apply.authority import Authority
from reconciler.apply.corrections import ForeignCheck
from reconciler.apply.events import EventSink
from reconciler.apply.foreign import Written
from reconciler.apply.journal import Journal
from reconciler.apply.report import Report
from reconciler.apply.verify import verify_changes
from reconciler.errors import LockLost
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import MedplumError
from reconciler.model import AccountInfo, Owners


def is_managed(managed: dict[str, AccountInfo]) -> Callable[[str], bool]:
    """Whether an account entry is the manifests' to decide: a managed account or an alias."""
    owners = Owners.of(managed)
    return lambda key: owners.owner(key) is not None


class AfterWrites:
    """A mixin of the Executor (apply/executor.py), kept apart by job."""

    client: MedplumClient
    managed: dict[str, AccountInfo]
    parallelism: int
    job_timeout: float
    verify: bool
    author: str | None
    authority: Authority
    journal: Journal | None
    on_event: EventSink
    lock_lost: str | None
    server_lost: str | None
    stop: threading.Event
    _written: dict[str, Written]

    def _lost(self, exc: LockLost) -> None:
        raise NotImplementedError

    def _after_writes(self, report: Report) -> None:
        if self._written and self.lock_lost is None and self.server_lost is None:
            try:
                self._foreign().run(report)
            except LockLost as exc:
                self._lost(exc)  # the journal stays: the next apply checks these writes
            except MedplumError as exc:  # the journal stays too
                report.foreign_unchecked.append(f"{len(self._written)} resources: {exc}")
            else:
                self._close_journal(report)
        elif self.lock_lost is None and self.server_lost is None:
            self._close_journal(report)  # journaled, nothing written (all re-planned away)
        if not self.verify or not report.succeeded_patients or self.lock_lost is not None:
            return
        if self.server_lost is not None:
            report.unrepaired.append(
                "verification skipped: the server stopped answering; run reconciler verify "
                "when it is back"
            )
            return
        try:
            self.authority.confirm()
            verify_changes(self.client, report, self.managed, parallelism=self.parallelism)
        except LockLost as exc:  # a repair is a write: after a lost lock, none
            self._lost(exc)
        except MedplumError as exc:  # the server went away after the writes
            report.unrepaired.append(f"verification could not run: {exc}")

    def _close_journal(self, report: Report) -> None:
        if self.journal is None:
            return
        try:
            self.journal.close()
        except MedplumError as exc:  # harmless: the next apply checks those writes again
            report.unrepaired.append(f"the apply journal was not removed: {exc}")

    def _foreign(self) -> ForeignCheck:
        return ForeignCheck(
            self.client,
            self._written,
            is_managed(self.managed),
            author=self.author,
            parallelism=self.parallelism,
            job_timeout=self.job_timeout,
            authority=self.authority,
            on_event=self.on_event,
        )
