"""One apply, start to end: take the lock, write in the safe order — revocations, then the
account changes, then grants (design section 8) — handle Ctrl-C, verify, write the audit
record and release the lock. The command builds a session, a view observes it."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from types import FrameType
from typing import Protocol

from reconciler.apply.access import AccessReport, AccessWriter
from reconciler.apply.afterwards import is_managed
from reconciler.apply.audit import audit_event
from reconciler.apply.authority import Authority
from reconciler.apply.events import ApplyStarted, Event
from reconciler.apply.executor import Executor
from reconciler.apply.journal import Journal, recover
from reconciler.apply.lock import ApplyLock, holder_name
from reconciler.apply.report import Recovered, Report
from reconciler.logs import get_logger
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import MedplumError
from reconciler.model import Phase, Plan
from reconciler.plan.jsonform import plan_digest
from reconciler.plan.replan import Replanner

log = get_logger("reconciler.apply")


class Observer(Protocol):
    """What a session tells the person watching (a view)."""

    def event(self, event: Event) -> None: ...
    def progress(self, done: int, failed: int) -> None: ...
    def waiting(self, delay_s: float) -> None: ...
    def message(self, line: str) -> None: ...
    def start(self, total: int) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class SessionOptions:
    parallelism: int = 10
    job_timeout: float = 300.0
    verify: bool = True
    lock: bool = True
    lock_timeout: float = 0.0
    lock_ttl: float = 600.0
    request_deadline: float = 30.0
    audit: bool = True
    propagate_with: str = "auto"  # how propagating calls go: auto, sync or async


class Ending(Enum):
    COMPLETE = "complete"
    UNCHECKED = "unchecked"  # every change made, some not checked for other writers' changes
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    LOCK_LOST = "lock lost"


@dataclass(frozen=True)
class ApplyResult:
    report: Report
    access: AccessReport

    @property
    def failures(self) -> list[str]:
        lines = [f"{o.ref}: {o.reason}" for o in self.report.failed] + self.report.unrepaired
        return lines + [f"{o.membership}: {o.reason}" for o in self.access.failed]

    @property
    def ending(self) -> Ending:
        if self.report.lock_lost:
            return Ending.LOCK_LOST
        if self.report.interrupted:
            return Ending.INTERRUPTED
        if self.failures:
            return Ending.FAILED
        return Ending.UNCHECKED if self.report.foreign_unchecked else Ending.COMPLETE


def take_lock(client: MedplumClient, options: SessionOptions) -> ApplyLock | None:
    """The apply lock, taken before the server is read and held through the prompt and the
    writes (as Terraform holds its state lock): nobody approves a plan that another apply is
    about to change, and a held lock is said before the plan, not after the 'yes'."""
    if not options.lock:
        log.warning("apply lock disabled (--lock=false): another apply may run at the same time")
        return None
    lock = ApplyLock(
        client,
        plan_digest="",  # not planned yet: recorded before the first write (record_plan)
        ttl_s=options.lock_ttl,
        wait_s=options.lock_timeout,
        request_deadline_s=options.request_deadline,
    )
    lock.acquire()
    return lock


class ApplySession:
    def __init__(
        self,
        client: MedplumClient,
        plan: Plan,
        observer: Observer,
        *,
        options: SessionOptions,
        replanner: Replanner | None = None,
        author: str | None = None,
        lock: ApplyLock | None = None,
    ) -> None:
        self.client = client
        self.plan = plan
        self.observer = observer
        self.options = options
        self.replanner = replanner  # None: a saved plan, applied exactly
        self.author = author
        self.lock = lock  # taken by the command before it read the server (take_lock)
        self.executor: Executor | None = None

    def run(self) -> ApplyResult:
        """Write under the lock the command holds, and release it on every way out."""
        if self.lock is not None:
            self.lock.record_plan(plan_digest(self.plan))
        try:
            return self._write()
        except KeyboardInterrupt:  # a second Ctrl-C: release the lock on the way out, quickly
            self._release(quick=True)
            raise
        finally:
            gone = self.executor is not None and self.executor.server_lost is not None
            self._release(quick=gone)

    def _release(self, *, quick: bool) -> None:
        lock, self.lock = self.lock, None
        if lock is not None:
            note = lock.release(quick=quick)
            if note:
                self.observer.message(note)

    def _write(self) -> ApplyResult:
        plan, options, observer = self.plan, self.options, self.observer
        observer.event(ApplyStarted.of(plan))
        authority = Authority(self.lock)
        replanner = self.replanner
        access = AccessWriter(
            self.client,
            plan.access_changes,
            replan=replanner.access if replanner is not None else None,
            on_event=observer.event,
            parallelism=options.parallelism,
            authority=authority,
        )
        lock = self.lock
        journal = Journal(
            self.client,
            run_id=lock.run_id if lock is not None else str(uuid.uuid4()),
            holder=lock.holder if lock is not None else holder_name(),
        )
        executor = self.executor = Executor(
            self.client,
            plan.managed,
            parallelism=options.parallelism,
            job_timeout=options.job_timeout,
            verify=options.verify,
            replan=replanner.change if replanner is not None else None,
            authority=authority,
            journal=journal,
            on_event=observer.event,
            author=self.author,
            propagate_with=options.propagate_with,
        )
        restore = self._install_interrupt(executor)
        observer.start(len(plan.changes))
        self.client.pacer.on_wait = lambda delay, _why: observer.waiting(delay)
        gate = authority.installed(self.client)
        gate.__enter__()
        recovered: list[Recovered] = []
        try:
            # First, a run that did not finish: keep the other writers' changes it overwrote.
            if lock is not None:
                recovered = self._recover(authority, is_managed(plan.managed))
            # Revocations first, then the account changes, then grants: no member ever sees
            # more than its current plus its desired grants (design section 8).
            access.run(Phase.REVOKE)
            if access.lock_lost:  # no account change starts after a lost lock
                executor.lock_lost = access.lock_lost
                executor.stop.set()
            report = executor.run(plan, observer.progress)
            if not executor.stop.is_set() and not report.lock_lost:
                access.run(Phase.GRANT)
                report.lock_lost = report.lock_lost or access.lock_lost
            access.finish_unstarted(
                f"not written: {report.lock_lost}"
                if report.lock_lost
                else "not written: apply was interrupted"
            )
        finally:
            gate.__exit__(None, None, None)
            self.client.pacer.on_wait = None
            observer.stop()
            restore()
        report.recovered = recovered
        for item in recovered:  # what the crashed run's check could not settle is unchecked
            report.foreign_unchecked += [
                f"{line} (a run that did not finish)" for line in item.unchecked
            ]
        result = ApplyResult(report, access.report)
        if options.audit and (report.outcomes or report.repaired or access.report.outcomes):
            self._audit(result)
        return result

    def _recover(self, authority: Authority, managed: Callable[[str], bool]) -> list[Recovered]:
        assert self.lock is not None
        return recover(
            self.client, authority, managed, own_run=self.lock.run_id,
            parallelism=self.options.parallelism, job_timeout=self.options.job_timeout,
            on_event=self.observer.event,
        )  # fmt: skip

    def _install_interrupt(self, executor: Executor) -> Callable[[], None]:
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: FrameType | None) -> None:
            if executor.stop.is_set():
                raise KeyboardInterrupt
            executor.stop.set()
            self.observer.message(
                "\nInterrupted: no new changes will start; waiting for those in flight "
                "(Ctrl-C again to abort)."
            )

        try:
            signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread (tests): keep the default behaviour
            return lambda: None

        def restore() -> None:
            signal.signal(signal.SIGINT, previous)

        return restore

    def _audit(self, result: ApplyResult) -> None:
        report, access = result.report, result.access
        counts = {
            "memberships_updated": len(access.updated),
            "memberships_failed": len(access.failed),
            "grants_added": access.granted,
            "grants_revoked": access.revoked,
            "patients_planned": report.planned,
            "patients_updated": len(report.succeeded_patients),
            "patients_failed": len(report.failed_patients),
            "resources_updated": len(report.succeeded_resources),
            "resources_failed": len(report.failed_resources),
            "patients_skipped": report.skipped,
            "accounts_added": report.added,
            "accounts_removed": report.removed,
            "compartment_repaired": report.repaired,
            "foreign_accounts_restored": report.foreign_restored,
            "foreign_accounts_dropped": report.foreign_dropped,
            "unfinished_runs_checked": len(report.recovered),
            "unfinished_runs_accounts_restored": sum(r.restored for r in report.recovered),
            "unfinished_runs_accounts_dropped": sum(r.dropped for r in report.recovered),
        }
        ending = result.ending
        success = ending is Ending.COMPLETE
        summary = {
            Ending.COMPLETE: "apply complete",
            Ending.UNCHECKED: "apply finished with unchecked resources",
            Ending.LOCK_LOST: f"apply failed: {report.lock_lost}",
        }.get(ending, "apply failed or interrupted")
        counts["foreign_unchecked"] = len(report.foreign_unchecked)
        event = audit_event(
            plan_digest=plan_digest(self.plan),
            manifests_digest=self.plan.manifest_digest,
            counts=counts,
            success=success,
            summary=summary,
        )
        try:
            created = self.client.create_resource(event)
            log.info("audit record written", audit_event=f"AuditEvent/{created['id']}")
        except MedplumError as exc:
            log.warning("could not write the audit record", error=str(exc))
