"""Medplum's `RateLimit` headers and one pacer shared by every worker thread.

Medplum sends one IETF-draft entry per limiter: `"requests";r=<remaining>;t=<seconds>` and, on
FHIR routes, `"fhirInteractions";r=<points>;t=<seconds>` (medplum-api.md, observed on 5.0.10).
Past the quota every FHIR request answers 429 with no Retry-After, so the pacer stops sending
*before* the remaining points run out and waits for the window to reset.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reconciler.logs import get_logger

log = get_logger("reconciler.pacer")

_ITEM = re.compile(r'\s*(?:"(?P<q>[^"]*)"|(?P<t>[A-Za-z0-9_*.-]+))(?P<params>(?:;[^,;]*)*)\s*')


@dataclass(frozen=True)
class Limit:
    name: str
    remaining: int
    reset_s: float


def parse_ratelimit(value: str | None) -> dict[str, Limit]:
    """Parse a structured-field list like `"requests";r=59999;t=60, "fhirInteractions";r=9;t=5`."""
    limits: dict[str, Limit] = {}
    if not value:
        return limits
    for item in value.split(","):
        m = _ITEM.fullmatch(item)
        if not m:
            continue
        name = m.group("q") if m.group("q") is not None else m.group("t")
        params: dict[str, str] = {}
        for param in (m.group("params") or "").split(";"):
            if "=" in param:
                k, v = param.split("=", 1)
                params[k.strip()] = v.strip().strip('"')
        try:
            limits[name] = Limit(name, int(float(params["r"])), float(params["t"]))
        except (KeyError, ValueError):
            continue
    return limits


def throttle_wait_s(body: Any) -> float | None:
    """`_msBeforeNext` from Medplum's throttled OperationOutcome diagnostics, in seconds."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    for issue in body.get("issue") or []:
        diagnostics = issue.get("diagnostics") if isinstance(issue, dict) else None
        if not isinstance(diagnostics, str) or "_msBeforeNext" not in diagnostics:
            continue
        try:
            return max(0.0, float(json.loads(diagnostics)["_msBeforeNext"]) / 1000)
        except (ValueError, KeyError, TypeError):
            return None
    return None


class Pacer:
    """Keeps `reserve` points of the FHIR quota unspent; when the remainder falls below it, every
    thread waits for the window's reset. A 429 blocks every thread until its wait is over.

    Async jobs charge the same quota between our requests, so a remainder read from the last
    response is already stale. Each change in flight pledges what a change is seen to charge
    (`begin_change`); the pacer counts the remainder minus the pledges not yet seen charged, and
    stops sending before the jobs can exhaust the window — a synchronous request sent into an
    exhausted window is refused (429), while a job just sleeps to the reset and goes on.
    """

    def __init__(
        self,
        *,
        reserve_points: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.reserve_points = reserve_points
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self.last: dict[str, Limit] = {}
        self._observed_at = 0.0
        self.waited_s = 0.0
        self.max_seen = 0  # the largest remainder seen: a lower bound of the window's limit
        self.on_wait: Callable[[float, str], None] | None = None
        self.estimated_change_points = 0  # from the plan's estimate; the floor of a pledge
        self._window_ends = 0.0  # the earliest reset any response announced for this window
        self._pledged = 0  # points the changes in flight may still charge, not yet seen spent
        self._in_flight = 0
        self._charged = 0  # points seen spent while changes ran
        self._changes_done = 0

    def effective_reserve(self) -> int:
        """Never hold back more than a quarter of the window (the limit is not sent; the
        largest remainder seen approximates it), so at least ~75 % of the quota gets used."""
        if self.max_seen:
            return max(100, min(self.reserve_points, self.max_seen // 4))
        return self.reserve_points

    def observe(self, header: str | None) -> None:
        limits = parse_ratelimit(header)
        if not limits:
            return
        with self._lock:
            now = self.clock()
            fhir = limits.get("fhirInteractions")
            previous = self.last.get("fhirInteractions")
            self.last.update(limits)
            self._observed_at = now
            if fhir is None:
                return
            if previous is not None and self._in_flight:
                self._account(previous, fhir, now)
            # Medplum's windows are fixed: every response of one window names the same reset,
            # rounded up to a second, so the earliest is the closest to the true one.
            ends = now + fhir.reset_s
            if now >= self._window_ends or ends < self._window_ends:
                self._window_ends = ends
            self.max_seen = max(self.max_seen, fhir.remaining)
            self._block_if_short(now)

    def _account(self, previous: Limit, fhir: Limit, now: float) -> None:
        """Count what was spent since the last response against the pledges in flight."""
        if now >= self._window_ends:
            # A new window: the jobs spent at most what the old one had left, then what this
            # one has already used. How much they really spent is unknown, so it settles the
            # pledges but does not count as seen charged (it would inflate every later pledge).
            spent = min(self._pledged, previous.remaining) + max(0, self.max_seen - fhir.remaining)
        else:
            spent = max(0, previous.remaining - fhir.remaining)
            self._charged += spent
        self._pledged = max(0, self._pledged - spent)

    def change_points(self) -> int:
        """What one change is expected to charge: the most of the estimate and what the changes
        finished so far were seen to charge on average, plus a tenth."""
        with self._lock:
            return self._change_points()

    def _change_points(self) -> int:
        # The drops seen while changes ran, over the changes that made them: those finished and
        # those still running (counted whole, which errs low while few have finished — the
        # estimate stays the floor).
        seen = 0
        if self._changes_done:
            seen = (self._charged * 11) // (10 * (self._changes_done + self._in_flight))
        return max(self.estimated_change_points, seen)

    def begin_change(self) -> None:
        """Pledge a change's points; if the window cannot take them, wait for the next one."""
        with self._lock:
            self._pledged += self._change_points()
            self._in_flight += 1
            self._block_if_short(self.clock())

    def _block_if_short(self, now: float) -> None:
        """Hold every thread to the window's reset when the remainder, less what the changes in
        flight may still charge, is under the reserve (a window already over holds nothing)."""
        fhir = self.last.get("fhirInteractions")
        short = fhir is not None and fhir.remaining - self._pledged < self.effective_reserve()
        if short and now < self._window_ends:
            self._blocked_until = max(self._blocked_until, self._window_ends)

    def end_change(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._changes_done += 1
            self._pledged = min(self._pledged, self._in_flight * self._change_points())

    def block_for(self, seconds: float) -> None:
        with self._lock:
            self._blocked_until = max(self._blocked_until, self.clock() + seconds)

    @property
    def remaining(self) -> int | None:
        fhir = self.last.get("fhirInteractions")
        return fhir.remaining if fhir else None

    @property
    def reset_in_s(self) -> float | None:
        fhir = self.last.get("fhirInteractions")
        if fhir is None:
            return None
        return max(0.0, self._observed_at + fhir.reset_s - self.clock())

    def wait_turn(self) -> float:
        """Sleep while the quota is (nearly) spent; return how long this thread waited."""
        waited = 0.0
        while True:
            with self._lock:
                delay = self._blocked_until - self.clock()
            if delay <= 0:
                break
            if self.on_wait is not None:
                self.on_wait(delay, "quota")
            if not waited:
                log.info(
                    "waiting for quota",
                    seconds=round(delay, 2),
                    remaining=self.remaining,
                    pledged=self._pledged,
                )
            self.sleep(min(delay, 1.0))
            waited += min(delay, 1.0)
        if waited:
            with self._lock:
                self.waited_s += waited
        return waited
