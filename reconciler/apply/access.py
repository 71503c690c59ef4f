"""Apply membership changes (design section 8): each write is `PUT ProjectMembership/{id}`
with the whole resource as just read and `If-Match` on its version; a 412 re-reads and, with
manifests, re-plans that membership (at most 3 tries); a saved plan fails a membership that
moved. Revocations run before any account change and grants after (the executor's caller
orders the phases). A write that would leave a membership with no `access` and no
`accessPolicy` is never sent: Medplum would let it see everything."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from reconciler.apply.authority import UNGUARDED, Authority
from reconciler.apply.events import EventSink, MembershipFinished, ignore
from reconciler.errors import ApplyFailed, LockLost
from reconciler.logs import get_logger
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import HTTPStatusError, MedplumError
from reconciler.model import AccessChange, AccessItem, AccessStep, LiveMembership, Phase
from reconciler.plan.records import to_live_membership
from reconciler.plan.versions import DURING_APPLY, moved

log = get_logger("reconciler.apply.access")

MAX_TRIES = 3
Replan = Callable[[LiveMembership], AccessChange | None]


@dataclass
class AccessOutcome:
    membership: str
    ok: bool
    granted: tuple[AccessItem, ...] = ()
    revoked: tuple[AccessItem, ...] = ()
    reason: str = ""
    skipped: bool = False  # re-read: nothing left to do


@dataclass
class AccessReport:
    planned: int
    outcomes: dict[str, AccessOutcome] = field(default_factory=dict)

    @property
    def failed(self) -> list[AccessOutcome]:
        return [o for o in self.outcomes.values() if not o.ok]

    @property
    def updated(self) -> list[AccessOutcome]:
        return [o for o in self.outcomes.values() if o.ok and not o.skipped]

    @property
    def granted(self) -> int:
        return sum(len(o.granted) for o in self.updated)

    @property
    def revoked(self) -> int:
        return sum(len(o.revoked) for o in self.updated)


class AccessWriter:
    def __init__(
        self,
        client: MedplumClient,
        changes: Sequence[AccessChange],
        *,
        replan: Replan | None = None,
        on_event: EventSink = ignore,
        parallelism: int = 10,
        authority: Authority = UNGUARDED,
    ) -> None:
        self.client = client
        self.changes = {c.membership: c for c in changes}
        self.replan = replan  # None: a saved plan, applied exactly
        self.on_event = on_event
        self.parallelism = max(1, parallelism)
        self.authority = authority  # its gate is the client's; confirm() before each phase
        # What each membership should hold after each phase, and the version we last saw or
        # wrote (a second step expects the version our own first step produced).
        self._pending: dict[str, AccessChange] = dict(self.changes)
        self._versions: dict[str, str] = {c.membership: c.version_id for c in changes}
        self._lock = threading.Lock()
        self.report = AccessReport(planned=len(changes))
        self.lock_lost: str | None = None  # set when a write met a lost lock: the phase ends

    def run(self, phase: Phase) -> None:
        if self.lock_lost is not None:
            return
        try:
            self.authority.confirm()
        except LockLost as exc:
            self.lock_lost = str(exc)
            return
        todo = [
            ref
            for ref, change in self._pending.items()
            if any(s.phase is phase for s in change.steps) and not self._done(ref)
        ]
        if not todo:
            return
        with ThreadPoolExecutor(self.parallelism, thread_name_prefix=f"access-{phase}") as pool:
            list(pool.map(lambda ref: self._write(ref, phase), sorted(todo)))

    def _done(self, ref: str) -> bool:
        outcome = self.report.outcomes.get(ref)
        return outcome is not None and (not outcome.ok or outcome.skipped)

    def _write(self, ref: str, phase: Phase) -> None:
        started = time.monotonic()
        if self.lock_lost is not None:
            return
        try:
            result = self._write_with_retries(ref, phase)
        except LockLost as exc:
            with self._lock:
                self.lock_lost = self.lock_lost or str(exc)
            return
        except (MedplumError, ApplyFailed) as exc:
            self._finish(ref, AccessOutcome(ref, False, reason=str(exc)), started)
            return
        if result is not None:
            self._finish(ref, result, started)

    def _write_with_retries(self, ref: str, phase: Phase) -> AccessOutcome | None:
        for attempt in range(1, MAX_TRIES + 1):
            resource = self.client.read_resource(*ref.split("/", 1))
            fresh = to_live_membership(resource)
            change = self._pending[ref]
            reason = moved(self._versions[ref], fresh.version_id, since=DURING_APPLY)
            untouched = self._versions[ref] == self.changes[ref].version_id
            if reason is None and untouched and sorted(fresh.entries) != sorted(change.before):
                # At the plan's own version the server holds other entries than the plan says
                # it did: the plan was edited (written lists keep "kept" entries as they are).
                raise ApplyFailed(
                    "the membership's access at the plan's version is not the plan's `before` "
                    "list, so the plan was edited; not written"
                )
            if reason is not None:
                if self.replan is None:
                    raise ApplyFailed(reason)
                replanned = self.replan(fresh)
                if replanned is None:
                    return AccessOutcome(ref, True, skipped=True)
                change = replanned
                with self._lock:
                    self._pending[ref] = change
                    self._versions[ref] = fresh.version_id
            step = _step_for(change, phase)
            if step is None and phase is Phase.GRANT:
                step = change.steps[-1]  # the last phase writes whatever is left
            if step is None:
                return None  # this membership's write belongs to the other phase
            if not step.access and not isinstance(resource.get("accessPolicy"), dict):
                raise ApplyFailed(
                    "refusing to write no access policy, which Medplum treats as unrestricted "
                    "access"
                )
            body = {**resource, "access": [json.loads(e) for e in step.access]}
            try:  # a write: it passes the client's gate (LockLost ends the phase)
                written = self.client.update_resource(body, if_match=fresh.version_id)
            except HTTPStatusError as exc:
                if exc.status == 412 and attempt < MAX_TRIES:
                    log.info("membership moved while writing; re-reading", membership=ref)
                    continue
                if exc.status == 403:
                    raise ApplyFailed(
                        "403 Forbidden: the client must be a project admin to change memberships"
                    ) from None
                raise
            version = str((written.get("meta") or {}).get("versionId", ""))
            with self._lock:
                self._versions[ref] = version
            last = step is change.steps[-1]
            if not last:
                return None  # the grant follows in its own phase
            return AccessOutcome(ref, True, granted=change.grant, revoked=change.revoke)
        raise ApplyFailed(f"still moving after {MAX_TRIES} tries")

    def _finish(self, ref: str, outcome: AccessOutcome, started: float) -> None:
        with self._lock:
            self.report.outcomes[ref] = outcome
        (log.debug if outcome.ok else log.warning)(
            "membership",
            membership=ref,
            result="ok" if outcome.ok else "failed",
            duration_ms=round((time.monotonic() - started) * 1000),
            **({"reason": outcome.reason} if outcome.reason else {}),
        )
        self.on_event(
            MembershipFinished(ref, outcome.ok, outcome.granted, outcome.revoked, outcome.reason)
        )

    def finish_unstarted(self, reason: str) -> None:
        """Memberships never written (interrupted before their phase): failed, with reason."""
        for ref in self.changes:
            if ref not in self.report.outcomes:
                self.report.outcomes[ref] = AccessOutcome(ref, False, reason=reason)


def _step_for(change: AccessChange, phase: Phase) -> AccessStep | None:
    return next((s for s in change.steps if s.phase is phase), None)
