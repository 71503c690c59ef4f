"""Medplum's per-client FHIR quota and its `RateLimit` headers.

Real Medplum counts points per minute per project membership (read 1, search 20, write 100;
every resource `$set-accounts` propagates to is a write charged to the caller) and, past the
quota, answers every FHIR request 429 with no Retry-After (medplum-api.md, "Rate limits").
Unmetered (no --fhir-quota), the headers still appear and report a large remainder.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from reconciler.sandbox.outcomes import FhirError, throttled

READ, SEARCH, WRITE = 1, 20, 100
UNMETERED_POINTS = 10_000_000
REQUESTS_PER_WINDOW = 60_000


@dataclass
class _Window:
    start: float
    points: int = 0
    requests: int = 0


class QuotaMeter:
    def __init__(self, points: int | None = None, window_s: float = 60.0) -> None:
        self.limit = points if points is not None else UNMETERED_POINTS
        self.metered = points is not None
        self.window_s = window_s
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self.throttled_count = 0

    def _window(self, client: str, now: float) -> _Window:
        w = self._windows.get(client)
        if w is None or now - w.start >= self.window_s:
            w = self._windows[client] = _Window(start=now)
        return w

    def reset_in(self, client: str) -> float:
        with self._lock:
            now = time.monotonic()
            w = self._window(client, now)
            return max(0.0, w.start + self.window_s - now)

    def header(self, client: str | None, *, fhir: bool) -> str:
        with self._lock:
            now = time.monotonic()
            w = self._window(client or "", now)
            t = max(0, math.ceil(w.start + self.window_s - now))
            parts = [f'"requests";r={max(0, REQUESTS_PER_WINDOW - w.requests)};t={t}']
            if fhir:
                parts.append(f'"fhirInteractions";r={max(0, self.limit - w.points)};t={t}')
            return ", ".join(parts)

    def count_request(self, client: str) -> None:
        with self._lock:
            self._window(client, time.monotonic()).requests += 1

    def _over(self, client: str) -> FhirError:
        now = time.monotonic()
        w = self._window(client, now)
        ms = max(1, int((w.start + self.window_s - now) * 1000))
        self.throttled_count += 1
        return FhirError(429, throttled(ms, w.points, self.limit))

    def admit(self, client: str) -> None:
        """Before a FHIR request: past the quota, everything answers 429."""
        if not self.metered:
            return
        with self._lock:
            w = self._window(client, time.monotonic())
            if w.points >= self.limit:
                raise self._over(client)

    def charge(self, client: str, points: int) -> None:
        """Charge a request's cost; a write that finds the quota spent is refused (429)."""
        with self._lock:
            w = self._window(client, time.monotonic())
            if self.metered and points >= WRITE and w.points >= self.limit:
                raise self._over(client)
            w.points += points

    def charge_waiting(self, client: str, points: int) -> None:
        """For async jobs: sleep until the window resets instead of failing."""
        while True:
            try:
                self.charge(client, points)
                return
            except FhirError:
                time.sleep(min(self.reset_in(client) + 0.01, self.window_s))
