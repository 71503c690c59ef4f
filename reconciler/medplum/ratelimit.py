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
    thread waits for the window's reset. A 429 blocks every thread until its wait is over."""

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
            self.last.update(limits)
            self._observed_at = self.clock()
            fhir = limits.get("fhirInteractions")
            if fhir is not None:
                self.max_seen = max(self.max_seen, fhir.remaining)
            if fhir is not None and fhir.remaining < self.effective_reserve():
                until = self._observed_at + fhir.reset_s
                self._blocked_until = max(self._blocked_until, until)

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
                log.info("waiting for quota", seconds=round(delay, 2))
            self.sleep(min(delay, 1.0))
            waited += min(delay, 1.0)
        if waited:
            with self._lock:
                self.waited_s += waited
        return waited
