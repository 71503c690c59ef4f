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


SMALL = 100  # one write at most: charged at once, so the window's limit is read off its answer


@dataclass
class Hold:
    """Points one change pledged: a synchronous call's whole cost (`exact`: it is reserved
    before the call and released when it returns), or what an async job may still charge."""

    points: int
    exact: bool


class Pacer:
    """Sends every request only when the FHIR quota's window can take it (Medplum answers 429
    past it, with no Retry-After), with what is known of the window: the remainder the last
    response showed, less what our requests in flight will be charged, less what the changes
    in flight pledged and were not yet seen to charge (an async job charges the quota from
    inside the server, between our requests).

    - A synchronous `$set-accounts` is never started without its whole cost reserved
      (`reserve`, waiting for a window that can take it): cut by the quota it would leave a
      partial compartment.
    - An async job pledges what it will charge (`pledge`); writers wait while the window less
      the pledges cannot take them, so the jobs never exhaust the window under our requests.
    - A one-point request (a job's status, a read) ignores the pledges: while the window has
      points, jobs' progress is followed — `reserve_points` is kept back from writers for it.
    - A 429 blocks every request until its wait is over (`block_for`).
    """

    def __init__(
        self,
        *,
        reserve_points: int = 1_000,
        poll_floor: int = 5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.reserve_points = reserve_points
        self.poll_floor = poll_floor  # a read goes while at least this much would be left
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._blocked_until = 0.0  # a 429's wait
        self.last: dict[str, Limit] = {}
        self._observed_at = 0.0
        self.waited_s = 0.0
        self.max_seen = 0  # the largest remainder seen
        self.capacity = 0  # the window's limit as far as seen (a remainder plus its cost)
        self.on_wait: Callable[[float, str], None] | None = None
        self._window_ends = 0.0  # the earliest reset any response of this window announced
        self._guessed = False  # _window_ends is our guess after a reset, not yet announced
        self._window_s = 60.0  # a window's length, from the largest reset announced
        self._remaining: int | None = None  # this window's remainder as far as known
        self._own = 0  # points of our requests in flight, not yet in a remainder seen
        self._pledged = 0  # points async jobs in flight may still charge, not yet seen spent
        self._open_async = 0  # points of the async pledges still open
        self._reserved = 0  # points of this window's synchronous calls not yet returned
        # The windows seen: (announced reset, lowest remainder), to tell what was spent.
        self._windows: list[tuple[float, int]] = []
        self.estimated_change_points = 0  # kept for callers that still set it

    # --- what is known of the window -------------------------------------------------------

    def effective_reserve(self) -> int:
        """What writers leave for one-point requests: never more than a quarter of the window
        (the limit is not sent; the largest remainder seen approximates it)."""
        if self.max_seen:
            return max(self.poll_floor, min(self.reserve_points, self.max_seen // 4))
        return self.reserve_points

    def _roll(self, now: float) -> None:
        """Past the announced reset a new window has opened: until one of its answers says, its
        remainder is the limit as far as seen and its reset a guess. Async jobs asleep on the
        old window charge the new one first (their pledges stay)."""
        if self._remaining is not None and now >= self._window_ends:
            old = self._remaining
            self._remaining = self.capacity or None
            # The jobs spent at most what the old window had left; the rest is still to come.
            self._pledged = max(0, self._pledged - max(0, old))
            # What is in flight stays counted (_own, _reserved): a request, or a synchronous
            # call charged write by write, under way at the reset may be charged to the new
            # window, all of it (found on a manual clock: a reset during ten calls in flight,
            # and a call reserved in the new window was cut by the old ones' remaining writes).
            self._window_ends = now + self._window_s
            self._guessed = True

    def observe(self, header: str | None, *, cost: int = 0, reserved: bool = False) -> None:
        """A response of a request that was to be charged `cost` (`reserved`: its points were
        reserved, not counted in flight). Each answer names its window by the reset it
        announces (rounded up to a second): the same window, a newer one (the server reset
        before our clock said), or an older one (a late answer: it only counts as spent)."""
        limits = parse_ratelimit(header)
        with self._lock:
            if not reserved:
                self._own = max(0, self._own - cost)
            if not limits:
                return
            now = self.clock()
            self.last.update(limits)
            self._observed_at = now
            fhir = limits.get("fhirInteractions")
            if fhir is None:
                return
            self._roll(now)
            ends = now + fhir.reset_s
            self._window_s = max(self._window_s if self.max_seen else 0.0, fhir.reset_s)
            self.max_seen = max(self.max_seen, fhir.remaining)
            # The window's limit: a remainder plus what its request cost — only from requests
            # charged at once (a call charged across a reset would make it look bigger).
            self.capacity = max(self.capacity, fhir.remaining + (cost if cost <= SMALL else 0))
            self._note_window(ends, fhir.remaining)
            before = self._remaining
            if before is not None and ends <= now:
                return  # a late answer: the reset it announces has passed, its window is over
            # A new window shows itself by a remainder that rose (a reset fills it up) and a
            # reset most of a window later; answers of one window can arrive out of order, and
            # an announced reset may run late by the request's own duration, never early.
            rose = fhir.remaining > before if before is not None else True
            later = ends > self._window_ends + self._window_s / 2
            if before is None or (rose and later and not self._guessed):
                if before is not None:  # the jobs spent at most what the old one had left
                    self._pledged = max(0, self._pledged - max(0, before))
                self._remaining, self._window_ends = fhir.remaining, ends
            else:
                if fhir.remaining < before:
                    # What the drop holds beyond this request's own cost, the jobs charged.
                    drop = before - fhir.remaining
                    self._pledged = max(0, self._pledged - max(0, drop - cost))
                    self._remaining = fhir.remaining
                # A guessed reset gives way to the first one announced; then the earliest.
                self._window_ends = ends if self._guessed else min(self._window_ends, ends)
            self._guessed = False

    def _note_window(self, ends: float, remaining: int) -> None:
        """Responses name their window by its reset (a whole second, rounded up: within a
        second of each other); answers that arrive late still name their own window."""
        near = min(1.5, self._window_s / 2)
        for index, (reset, lowest) in enumerate(self._windows):
            if abs(reset - ends) < near:
                self._windows[index] = (min(reset, ends), min(lowest, remaining))
                return
        self._windows.append((ends, remaining))

    @property
    def spent_seen(self) -> int:
        """Points the windows seen were charged, as far as their lowest remainder shows: what
        was spent after the last answer of a window (a job finishing alone) is not seen."""
        with self._lock:
            return sum(max(0, self.capacity - lowest) for _, lowest in self._windows)

    def forget(self, cost: int, *, reserved: bool = False) -> None:
        """A request that got no answer: what it was to be charged is no longer in flight."""
        if not reserved:
            with self._lock:
                self._own = max(0, self._own - cost)

    def _room(self, now: float) -> int | None:
        self._roll(now)
        if self._remaining is None:
            return None  # unmetered, or nothing seen yet
        return self._remaining - self._own

    # --- admission -------------------------------------------------------------------------

    def _fits(self, cost: int, now: float) -> bool:
        room = self._room(now)
        if room is None or cost <= 0:  # nothing known, or not a FHIR request
            return True
        if cost <= 1:  # polls and reads: past the pledges, while the window has points
            return room - cost >= self.poll_floor
        if room - self._held() >= cost:
            return True
        # Bigger than the window as far as seen: it goes first thing in a new window.
        too_big = bool(self.capacity) and cost > self.capacity - self.effective_reserve()
        return too_big and self._guessed and self._own == 0 and self._reserved == 0

    def _held(self) -> int:
        """What writers may not take: reservations, pledges, and the reserve for polls."""
        return self._reserved + self._pledged + self.effective_reserve()

    def admit(self, cost: int = 0, *, reserved: bool = False) -> float:
        """Before a request: wait until the window can take `cost` (a request whose points
        were reserved only waits out a 429). Returns how long this thread waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                blocked = self._blocked_until - now
                if blocked <= 0 and (reserved or self._fits(cost, now)):
                    if not reserved:
                        self._own += cost
                    break
                delay = max(blocked, min(self._window_ends - now, 0.25), 0.01)
            waited += self._sleep(delay, waited)
        return self._waited(waited)

    def wait_turn(self) -> float:
        return self.admit(0)

    def reserve(self, points: int) -> Hold:
        """A synchronous call's whole cost, taken from the window before it is sent: waits
        until a window can take it all (one that never can takes it when it opens)."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                room = self._room(now)
                blocked = self._blocked_until - now
                need = min(points, max(0, (self.capacity or points) - self.effective_reserve()))
                # A window only guessed to have opened (our clock passed the announced reset)
                # is not trusted while answers are still to come: they tell whether it did.
                # (Found: an early announced reset — the header reports the tighter of two
                # limiters — rolled the window too soon, and calls reserved on the guess were cut.)
                unconfirmed = self._guessed and (self._own > 0 or self._reserved > 0)
                if (
                    blocked <= 0
                    and not unconfirmed
                    and (room is None or room - self._held() >= need)
                ):
                    self._reserved += points
                    break
                delay = max(blocked, min(self._window_ends - now, 0.25), 0.01)
            waited += self._sleep(delay, waited)
        self._waited(waited)
        return Hold(points, exact=True)

    def pledge(self, points: int) -> Hold:
        """What an async job will charge from inside the server. A job bigger than the window
        counts as one window's worth: it sleeps through resets and goes on."""
        with self._lock:
            cap = max(0, (self.capacity or points) - self.effective_reserve() - 100)
            counted = min(points, cap) if self.capacity else points
            self._pledged += counted
            self._open_async += counted
        return Hold(counted, exact=False)

    def release(self, hold: Hold) -> None:
        with self._lock:
            if hold.exact:  # the call returned: its charge is in the remainder seen since
                self._reserved = max(0, self._reserved - hold.points)
                return
            self._open_async = max(0, self._open_async - hold.points)
            # What the finished job had not been seen to charge is no longer to come.
            self._pledged = min(self._pledged, self._open_async)

    def block_for(self, seconds: float) -> None:
        with self._lock:
            self._blocked_until = max(self._blocked_until, self.clock() + seconds)

    def _sleep(self, delay: float, waited: float) -> float:
        if self.on_wait is not None:
            self.on_wait(delay, "quota")
        if not waited:
            log.info(
                "waiting for quota",
                seconds=round(delay, 2),
                remaining=self.remaining,
                pledged=self._pledged,
            )
        step = min(delay, 1.0)
        self.sleep(step)
        return step

    def _waited(self, waited: float) -> float:
        if waited:
            with self._lock:
                self.waited_s += waited
        return waited

    # --- what callers read -----------------------------------------------------------------

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

    def can_ever_take(self, points: int) -> bool:
        """Whether one window can hold `points` (with the reserve): else only a job can."""
        return not self.capacity or points <= self.capacity - self.effective_reserve()
