"""The apply lock: one `Basic` resource with a fixed identifier, so two pipelines never apply at
once. Taken with a conditional create (`If-None-Exist`), renewed and taken over with a
conditional update (`If-Match` on its version — a 412 means someone else won), released with a
delete. The holder, start time, plan digest and expiry are in extensions, readable by humans."""

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
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import HTTPStatusError, MedplumError

log = get_logger("reconciler.apply.lock")

LOCK_SYSTEM = "https://github.com/medplum-tenancy-reconciler/lock"
LOCK_VALUE = "apply"
EXT = "https://github.com/medplum-tenancy-reconciler/lock#"
DEFAULT_TTL_S = 600.0


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


@dataclass
class LockInfo:
    id: str
    version: str
    holder: str
    since: str
    expires: str
    run: str

    @classmethod
    def of(cls, resource: dict[str, Any]) -> LockInfo:
        return cls(
            id=str(resource["id"]),
            version=str(resource["meta"]["versionId"]),
            holder=_ext(resource, "holder"),
            since=_ext(resource, "since"),
            expires=_ext(resource, "expires"),
            run=_ext(resource, "run"),
        )

    def expired(self, now: datetime) -> bool:
        try:
            return parse_iso_utc(self.expires) <= now
        except ValueError:
            return True  # unreadable expiry: treat as stale rather than block forever


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
    ) -> None:
        self.client = client
        self.plan_digest = plan_digest
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.run_id = str(uuid.uuid4())
        self.holder = holder_name()
        self.info: LockInfo | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        # Fencing: writes may start only while the lock is known held — until the last
        # successful take or renewal plus the TTL, minus a margin for a write in flight: at
        # least a whole request deadline, so a write started at the last moment has ended
        # (or been abandoned) before the lock can expire on the server. Apply refuses a TTL
        # under twice the deadline, so the margin stays below the renewal interval's slack.
        self.margin_s = max(min(ttl_s / 3, 60.0), request_deadline_s)
        self._held_until = 0.0
        self.lost: str | None = None

    def _body(self, since: str, lock_id: str | None = None) -> dict[str, Any]:
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "resourceType": "Basic",
            "identifier": [{"system": LOCK_SYSTEM, "value": LOCK_VALUE}],
            "code": {"text": "medplum-tenancy-reconciler apply lock"},
            "extension": [
                {"url": EXT + "holder", "valueString": self.holder},
                {"url": EXT + "run", "valueString": self.run_id},
                {"url": EXT + "since", "valueDateTime": since},
                {
                    "url": EXT + "expires",
                    "valueDateTime": iso_utc(now + timedelta(seconds=self.ttl_s)),
                },
                {"url": EXT + "plan", "valueString": self.plan_digest},
            ],
        }
        if lock_id:
            body["id"] = lock_id
        return body

    def _try_once(self) -> LockInfo | None:
        """Take the lock if free or expired; return the current holder's info if not."""
        since = iso_utc(datetime.now(UTC))
        created = self.client.create_resource(
            self._body(since), if_none_exist=f"identifier={LOCK_SYSTEM}|{LOCK_VALUE}"
        )
        info = LockInfo.of(created)
        if info.run == self.run_id:
            self.info = info
            return None
        if not info.expired(datetime.now(UTC)):
            return info
        try:  # expired: take it over, but only from the version we saw
            taken = self.client.update_resource(self._body(since, info.id), if_match=info.version)
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
                raise ApplyRefused(
                    f"another apply holds the lock (since {other.since}, by {other.holder}); "
                    f"{waited}if it is stale: reconciler force-unlock {other.id}"
                )
            time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))

    def _start_renewing(self) -> None:
        def renew() -> None:
            while not self._stop.wait(self.ttl_s / 3):
                info = self.info
                if info is None:
                    return
                started = time.monotonic()
                try:
                    body = self._body(info.since, info.id)
                    self.info = LockInfo.of(
                        self.client.update_resource(body, if_match=info.version)
                    )
                    self._held_until = started + self.ttl_s - self.margin_s
                except Exception as exc:
                    # A 412 (someone took it over) or no answer: this run can no longer prove
                    # it holds the lock, so no new write may start (ensure_held says so).
                    self.lost = f"could not renew it ({exc})"
                    log.warning("lost the apply lock", lock=info.id, error=str(exc))
                    return

        self._renewer = threading.Thread(target=renew, name="lock-renewer", daemon=True)
        self._renewer.start()

    def ensure_held(self) -> None:
        """Before each write: raise LockLost unless the lock is known held right now."""
        if self.lost is not None:
            raise LockLost(f"lost the apply lock: {self.lost}")
        if time.monotonic() >= self._held_until:
            self.lost = "its renewal is overdue (the process was paused or the server is slow)"
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
                self.client.request("DELETE", f"Basic/{info.id}", deadline_s=3.0, retries=0)
                log.info("apply lock released", lock=info.id)
                return None
            current = LockInfo.of(self.client.read_resource("Basic", info.id))
            if current.run != self.run_id:
                log.warning("the apply lock was taken over; not releasing it", lock=info.id)
                return None
            self.client.delete_resource("Basic", info.id)
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


def force_unlock(
    client: MedplumClient, lock_id: str, confirm: Callable[[LockInfo], bool] | None = None
) -> LockInfo:
    """Delete an apply lock — only a reconciler lock, and only if `confirm(info)` agrees."""
    resource = client.read_resource("Basic", lock_id)
    idents = {(i.get("system"), i.get("value")) for i in resource.get("identifier") or []}
    if (LOCK_SYSTEM, LOCK_VALUE) not in idents:
        raise ApplyRefused(f"Basic/{lock_id} is not a reconciler apply lock; not deleting it")
    info = LockInfo.of(resource)
    if confirm is not None and not confirm(info):
        raise ApplyRefused(f"kept the apply lock Basic/{lock_id}; nothing was changed")
    client.delete_resource("Basic", lock_id)
    return info
