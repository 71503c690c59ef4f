"""Medplum's FHIR quota and its `RateLimit` headers, metered the way Medplum meters
(medplum-api.md, "How the meter works"; server source `fhir/fhirquota.ts`):

- two fixed windows (60 s; `--quota-window-s` scales them), opened by a key's first charge: one
  per client membership (the `--fhir-quota` limit) and one for the project (10 times that);
- a charge consumes points on both, the membership first; a charge that takes a window past its
  limit is refused (429), and the points stay spent (rate-limiter-flexible's `consume`);
- each request, and each async job, has its own meter: once it has seen the window exhausted
  (remaining ≤ 0) its next charge is refused without consuming; a synchronous request answers
  429 there, an async job sleeps `msBeforeNext * (1 + up to 25 % jitter)` and charges again;
- the header reports the tighter of the two limiters; 429s carry no Retry-After.
Costs (medplum-api.md, observed on 5.0.10): read 1, history 10, search 20, write 100;
`$set-accounts` with propagation: the write, a compartment search, a write per compartment
resource (120 + 100·k), and with Prefer: respond-async the AsyncJob written twice (+200).
Unmetered (no --fhir-quota), the headers still appear and report a large remainder.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass

from reconciler.sandbox.clock import Clock, SystemClock
from reconciler.sandbox.outcomes import FhirError, throttled

READ, HISTORY, SEARCH, WRITE = 1, 10, 20, 100  # fhirquota.ts FhirQuotaCost
UNMETERED_POINTS = 10_000_000
REQUESTS_PER_WINDOW = 60_000
PROJECT_FACTOR = 10
JOB_JITTER = 0.25
PROJECT_KEY = "project"


@dataclass(frozen=True)
class LimiterState:
    limit: int
    consumed: int
    ms_before_next: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.consumed)

    @property
    def over(self) -> bool:
        return self.consumed > self.limit


class FixedWindow:
    """Points per key in fixed windows that open at the key's first charge."""

    def __init__(
        self, limit: int, window_s: float, clock: Clock, limits: dict[str, int] | None = None
    ) -> None:
        self.limit = limit
        self.limits = dict(limits or {})  # per key, where it differs (a membership's fhirQuota)
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (opened at, points)

    def _current(self, key: str, now: float) -> tuple[float, int]:
        opened, points = self._windows.get(key, (now, 0))
        if now - opened >= self.window_s:
            opened, points = now, 0
        return opened, points

    def consume(self, key: str, points: int) -> LimiterState:
        now = self.clock.now()
        opened, used = self._current(key, now)
        used += points
        self._windows[key] = (opened, used)
        return self._state(key, opened, used, now)

    def peek(self, key: str) -> LimiterState:
        now = self.clock.now()
        opened, used = self._current(key, now)
        return self._state(key, opened, used, now)

    def _state(self, key: str, opened: float, used: int, now: float) -> LimiterState:
        ms = max(1, math.ceil((opened + self.window_s - now) * 1000))
        return LimiterState(self.limits.get(key, self.limit), used, ms)


class QuotaMeter:
    def __init__(
        self,
        points: int | None = None,
        window_s: float = 60.0,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        client_points: dict[str, int] | None = None,
    ) -> None:
        # Metered when a quota is set for all clients or for some (Medplum's membership option
        # `fhirQuota`); the project's window stays 10x the default.
        self.metered = points is not None or bool(client_points)
        self.limit = points if points is not None else UNMETERED_POINTS
        self.window_s = window_s
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.membership = FixedWindow(self.limit, window_s, self.clock, client_points)
        self.project = FixedWindow(self.limit * PROJECT_FACTOR, window_s, self.clock)
        self.requests = FixedWindow(REQUESTS_PER_WINDOW, window_s, self.clock)
        self._lock = threading.Lock()
        self.throttled_count = 0
        self.points_charged = 0  # every charge, metered or not: what a run cost, for measuring

    def meter(self, client: str) -> RequestMeter:
        """A new meter for one request or one async job of `client`."""
        return RequestMeter(self, client)

    def count_request(self, client: str) -> None:
        with self._lock:
            self.requests.consume(client, 1)

    def tighter(self, client: str) -> LimiterState:
        with self._lock:
            return _tighter(self.membership.peek(client), self.project.peek(PROJECT_KEY))

    def header(self, client: str | None, *, fhir: bool, state: LimiterState | None = None) -> str:
        with self._lock:
            req = self.requests.peek(client or "")
        parts = [
            f'"requests";r={req.remaining};t={math.ceil(req.ms_before_next / 1000)}',
        ]
        if fhir:
            fhir_state = state or self.tighter(client or "")
            parts.append(
                f'"fhirInteractions";r={fhir_state.remaining};'
                f"t={math.ceil(fhir_state.ms_before_next / 1000)}"
            )
        return ", ".join(parts)

    def _refuse(self, state: LimiterState) -> FhirError:
        with self._lock:
            self.throttled_count += 1
        return FhirError(429, throttled(state.ms_before_next, state.consumed, state.limit))


def _tighter(a: LimiterState, b: LimiterState) -> LimiterState:
    return b if b.remaining < a.remaining else a


class RequestMeter:
    """One request's (or one job's) view of the quota, like Medplum's per-request limiter."""

    def __init__(self, quota: QuotaMeter, client: str) -> None:
        self.quota = quota
        self.client = client
        self.current: LimiterState | None = None

    def charge(self, points: int) -> None:
        """Consume `points`; 429 past the limit (the points stay spent) or once exhausted."""
        quota = self.quota
        with quota._lock:
            quota.points_charged += points
        if not quota.metered:
            return
        if self.current is not None and self.current.remaining <= 0:
            # Seen exhausted: refused at once. Refresh the state so a new window can be seen.
            self.current = quota.tighter(self.client)
            raise quota._refuse(self.current)
        with quota._lock:
            member = quota.membership.consume(self.client, points)
            if member.over:
                self.current = member
            else:
                self.current = _tighter(member, quota.project.consume(PROJECT_KEY, points))
        if self.current.over:
            raise quota._refuse(self.current)

    def charge_waiting(self, points: int) -> None:
        """For async jobs: past the quota, sleep until the reset (with jitter) and charge again."""
        while True:
            try:
                self.charge(points)
                return
            except FhirError:
                state = self.quota.tighter(self.client)
                jitter = 1 + self.quota.rng.uniform(0, JOB_JITTER)
                self.quota.clock.sleep(state.ms_before_next / 1000 * jitter)
                self.current = None

    def header(self) -> str:
        return self.quota.header(self.client, fhir=True, state=self.current)
