"""The apply lock: one `Basic` resource with a fixed identifier, so two pipelines never apply at
once. Taken with a conditional create (`If-None-Exist`), renewed and taken over with a
conditional update (`If-Match` on its version — a 412 means someone else won), released with a
delete. The holder, start time, TTL and plan digest are in extensions, readable by humans.

The lease is measured on the **server's** clock (design section 11): a lock expires when the
server's time (the `Date` of the answer that showed it) passes its `meta.lastUpdated` — the
server's time of its last renewal — plus its TTL. No local clock enters that decision, so a
holder whose clock is slow cannot be taken over early, nor write late: the holder itself
stops writing on its monotonic clock, counted from before each renewal was sent, and confirms
before each batch that the lock is still its own (a replaced or deleted lock stops it)."""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.clock import iso_utc, parse_iso_utc
from reconciler.errors import ApplyRefused, LockLost
from reconciler.logs import get_logger
from reconciler.medplum._types import Result
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import HTTPStatusError, MedplumError

log = get_logger("reconciler.apply.lock")

LOCK_SYSTEM = "https://github.com/medplum-tenancy-reconciler/lock"
LOCK_VALUE = "apply"
EXT = "https://github.com/medplum-tenancy-reconciler/lock#"
DEFAULT_TTL_S = 600.0
Wall = Callable[[], datetime]


def holder_name() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    ci = os.environ.get("GITHUB_RUN_ID") or os.environ.get("CI_JOB_ID")
    suffix = f" (CI run {ci})" if ci else ""
    return f"{user}@{socket.gethostname()} pid {os.getpid()}{suffix}"


def _ext(resource: dict[str, Any], name: str) -> str:
    for ext in resource.get("extension") or []:
        if ext.get("url") == EXT + name:
            return str(ext.get("valueString") or ext.get("valueDateTime") or "")
    return ""


def server_time(result: Result) -> datetime | None:
    return result.server_time


@dataclass
class LockInfo:
    id: str
    version: str
    holder: str
    since: str
    expires: str  # for people: when the holder expected it to expire
    run: str
    ttl_s: float | None  # None: a lock written by another version of the tool
    renewed: str  # meta.lastUpdated: the server's time of the last take or renewal
    plan: str = ""

    @classmethod
    def of(cls, resource: dict[str, Any]) -> LockInfo:
        ttl = _ext(resource, "ttl")
        try:
            ttl_s: float | None = float(ttl) if ttl else None
        except ValueError:
            ttl_s = None
        return cls(
            id=str(resource["id"]),
            version=str(resource["meta"]["versionId"]),
            holder=_ext(resource, "holder"),
            since=_ext(resource, "since"),
            expires=_ext(resource, "expires"),
            run=_ext(resource, "run"),
            ttl_s=ttl_s,
            renewed=str((resource.get("meta") or {}).get("lastUpdated") or ""),
            plan=_ext(resource, "plan"),
        )

    def expires_at(self) -> datetime | None:
        """On the server's clock: its last renewal plus its TTL (None: unreadable)."""
        try:
            if self.ttl_s is not None and self.renewed:
                return parse_iso_utc(self.renewed) + timedelta(seconds=self.ttl_s)
            return parse_iso_utc(self.expires) if self.expires else None
        except ValueError:
            return None

    def expired(self, server_now: datetime) -> bool:
        """A lock whose lease cannot be read is held: it is removed with force-unlock, never
        taken over silently."""
        ends = self.expires_at()
        return ends is not None and ends <= server_now


class ApplyLock:
    def __init__(
        self,
        client: MedplumClient,
        *,
        plan_digest: str,
        ttl_s: float = DEFAULT_TTL_S,
        wait_s: float = 0.0,
        poll_s: float = 1.0,
        request_deadline_s: float = 0.0,
        wall: Wall = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.plan_digest = plan_digest
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.wall = wall  # the local clock: only for what people are shown, never the lease
        self.run_id = str(uuid.uuid4())
        self.holder = holder_name()
        self.info: LockInfo | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._mutex = threading.Lock()  # a renewal and a confirmation never cross
        self._offset = timedelta(0)  # server clock minus local clock, from the last answer
        # Fencing: writes may start only while the lock is known held — until the last
        # successful take or renewal plus the TTL, minus a margin for a write in flight: at
        # least a whole request deadline, so a write started at the last moment has ended
        # (or been abandoned) before the lock can expire on the server. Apply refuses a TTL
        # under twice the deadline, so the margin stays below the renewal interval's slack.
        self.margin_s = max(min(ttl_s / 3, 60.0), request_deadline_s)
        self._held_until = 0.0
        self.lost: str | None = None

    def _body(self, since: str, lock_id: str | None = None) -> dict[str, Any]:
        server_now = self.wall() + self._offset
        body: dict[str, Any] = {
            "resourceType": "Basic",
            "identifier": [{"system": LOCK_SYSTEM, "value": LOCK_VALUE}],
            "code": {"text": "medplum-tenancy-reconciler apply lock"},
            "extension": [
                {"url": EXT + "holder", "valueString": self.holder},
                {"url": EXT + "run", "valueString": self.run_id},
                {"url": EXT + "since", "valueDateTime": since},
                {"url": EXT + "ttl", "valueString": f"{self.ttl_s:g}"},
                {
                    "url": EXT + "expires",
                    "valueDateTime": iso_utc(server_now + timedelta(seconds=self.ttl_s)),
                },
                {"url": EXT + "plan", "valueString": self.plan_digest},
            ],
        }
        if lock_id:
            body["id"] = lock_id
        return body

    def _server_now(self, result: Result) -> datetime:
        """The server's time: its Date header (Medplum and the sandbox always send one); a
        server without it leaves only the local clock."""
        now = server_time(result) or self.wall()
        self._offset = now - self.wall()
        return now

    def _try_once(self) -> LockInfo | None:
        """Take the lock if free or expired; return the current holder's info if not."""
        since = iso_utc(self.wall() + self._offset)
        result = self.client.request(
            "POST",
            "Basic",
            json=self._body(since),
            headers={"If-None-Exist": f"identifier={LOCK_SYSTEM}|{LOCK_VALUE}"},
            gated=False,  # the lock's own writes are how authority is won, not used
        )
        info = LockInfo.of(result.body)
        server_now = self._server_now(result)
        if info.run == self.run_id:
            self.info = info
            return None
        if not info.expired(server_now):
            return info
        try:  # expired on the server's clock: take it over, but only from the version we saw
            taken = self.client.request(
                "PUT", f"Basic/{info.id}", json=self._body(since, info.id),
                headers={"If-Match": f'W/"{info.version}"'}, gated=False,
            ).body  # fmt: skip
        except HTTPStatusError as exc:
            if exc.status in (404, 409, 412):
                return info  # someone else released or took it first; look again
            raise
        log.warning("took over an expired apply lock", lock=info.id, previous_holder=info.holder)
        self.info = LockInfo.of(taken)
        return None

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while True:
            attempt_started = time.monotonic()
            other = self._try_once()
            if other is None:
                assert self.info is not None
                self._held_until = attempt_started + self.ttl_s - self.margin_s
                log.info("apply lock taken", lock=self.info.id)
                self._start_renewing()
                return
            if time.monotonic() >= deadline:
                waited = (
                    f"waited {self.wait_s:g} s; "
                    if self.wait_s
                    else "wait with --lock-timeout, or "
                )
                ends = other.expires_at()
                until = f", until {iso_utc(ends)}" if ends else ""
                raise ApplyRefused(
                    f"another apply holds the lock (since {other.since}, by {other.holder}"
                    f"{until}); {waited}if it is stale: reconciler force-unlock {other.id}"
                )
            time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))

    def _renew(self) -> bool:
        """One renewal (the holder, the TTL and the plan digest rewritten); False once lost."""
        with self._mutex:
            info = self.info
            if info is None or self.lost is not None:
                return False
            started = time.monotonic()
            try:
                result = self.client.request(
                    "PUT", f"Basic/{info.id}", json=self._body(info.since, info.id),
                    headers={"If-Match": f'W/"{info.version}"'}, gated=False,
                )  # fmt: skip
                self._server_now(result)
                self.info = LockInfo.of(result.body)
                self._held_until = started + self.ttl_s - self.margin_s
                return True
            except Exception as exc:
                # A 412 (someone took it over) or no answer: this run can no longer prove it
                # holds the lock, so no new write may start.
                self.lost = f"could not renew it ({exc})"
                log.warning("lost the apply lock", lock=info.id, error=str(exc))
                return False

    def record_plan(self, digest: str) -> None:
        """The lock is taken before planning; once the plan is known, `lock status` shows it."""
        if digest != self.plan_digest:
            self.plan_digest = digest
            self._renew()

    def _start_renewing(self) -> None:
        def renew() -> None:
            while not self._stop.wait(self.ttl_s / 3):
                if not self._renew():
                    return

        self._renewer = threading.Thread(target=renew, name="lock-renewer", daemon=True)
        self._renewer.start()

    def ensure_held(self) -> None:
        """The write gate: before each write, raise LockLost unless the lock is known held."""
        if self.lost is not None:
            raise LockLost(f"lost the apply lock: {self.lost}")
        if time.monotonic() >= self._held_until:
            self.lost = "its renewal is overdue (the process was paused or the server is slow)"
            raise LockLost(f"lost the apply lock: {self.lost}")

    def confirm(self) -> None:
        """Before a batch of writes: one read shows the lock is still this run's. A lock that
        was removed (force-unlock) or replaced (another apply) stops the writes at once."""
        self.ensure_held()
        with self._mutex:
            info = self.info
            if info is None:
                raise LockLost("lost the apply lock: it was released")
            try:
                current = LockInfo.of(self.client.read_resource("Basic", info.id))
            except HTTPStatusError as exc:
                if exc.status not in (404, 410):
                    raise
                self.lost = "it was removed (force-unlock?) while this apply ran"
                raise LockLost(f"lost the apply lock: {self.lost}") from None
            if current.run != self.run_id:
                self.lost = f"another apply holds it now ({current.holder})"
                raise LockLost(f"lost the apply lock: {self.lost}")

    def release(self, *, quick: bool = False) -> str | None:
        """Remove the lock if this run still holds it. Never raises: returns None when done,
        else one line for the person (the lock is left to expire, with its id). `quick` (a
        second Ctrl-C): one DELETE with a short deadline and no retries, no check first."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        info, self.info = self.info, None
        if info is None:
            return None
        try:
            if quick:
                self.client.request(
                    "DELETE", f"Basic/{info.id}", deadline_s=3.0, retries=0, gated=False
                )
                log.info("apply lock released", lock=info.id)
                return None
            current = LockInfo.of(self.client.read_resource("Basic", info.id))
            if current.run != self.run_id:
                log.warning("the apply lock was taken over; not releasing it", lock=info.id)
                return None
            self.client.request("DELETE", f"Basic/{info.id}", gated=False)
            log.info("apply lock released", lock=info.id)
            return None
        except HTTPStatusError as exc:
            if exc.status == 404:
                return None
            reason = str(exc)
        except MedplumError as exc:  # the server is gone, or never answered
            reason = str(exc)
        log.warning("could not release the apply lock", lock=info.id, error=reason)
        return (
            f"The apply lock Basic/{info.id} was not released ({reason}); it expires by "
            f"itself after --lock-ttl, or remove it with: reconciler force-unlock {info.id}"
        )


@dataclass(frozen=True)
class LockState:
    info: LockInfo
    live: bool  # renewed within its TTL, on the server's clock
    server_now: datetime


def read_lock(client: MedplumClient, lock_id: str) -> LockState:
    """A lock record and whether it is live, judged on the server's clock."""
    try:
        result = client.request("GET", f"Basic/{lock_id}")
    except HTTPStatusError as exc:
        if exc.status in (404, 410):
            raise ApplyRefused(f"No lock with id {lock_id}; nothing was changed") from None
        raise
    resource = result.body
    idents = {(i.get("system"), i.get("value")) for i in resource.get("identifier") or []}
    if (LOCK_SYSTEM, LOCK_VALUE) not in idents:
        raise ApplyRefused(f"Basic/{lock_id} is not a reconciler apply lock; not deleting it")
    info = LockInfo.of(resource)
    now = server_time(result) or datetime.now(UTC)
    return LockState(info, not info.expired(now), now)


def force_unlock(
    client: MedplumClient,
    lock_id: str,
    confirm: Callable[[LockState], bool] | None = None,
    *,
    force: bool = False,
) -> LockInfo:
    """Delete an apply lock — only a reconciler lock, and only if `confirm(state)` agrees. A
    live lock (renewed within its TTL: an apply may still be writing) needs `force` too."""
    state = read_lock(client, lock_id)
    info = state.info
    if state.live and not force:
        raise ApplyRefused(
            f"Basic/{lock_id} is live: held by {info.holder}, last renewed {info.renewed} "
            f"(within its TTL of {info.ttl_s:g} s), so an apply may still be writing; give "
            "--force to remove it anyway (that apply then stops at its next batch)"
            if info.ttl_s is not None
            else f"Basic/{lock_id} is live: held by {info.holder}, last renewed {info.renewed}; "
            "give --force to remove it anyway"
        )
    if confirm is not None and not confirm(state):
        raise ApplyRefused(f"kept the apply lock Basic/{lock_id}; nothing was changed")
    client.request("DELETE", f"Basic/{lock_id}", gated=False)
    return info


def current_lock(client: MedplumClient) -> LockState | None:
    """The apply lock record, if there is one, and whether it is live (server clock)."""
    result = client.request(
        "GET", "Basic", params=[("identifier", f"{LOCK_SYSTEM}|{LOCK_VALUE}"), ("_count", "1")]
    )
    entries = (result.body or {}).get("entry") or []
    resource = entries[0].get("resource") if entries else None
    if not isinstance(resource, dict):
        return None
    info = LockInfo.of(resource)
    now = server_time(result) or datetime.now(UTC)
    return LockState(info, not info.expired(now), now)
