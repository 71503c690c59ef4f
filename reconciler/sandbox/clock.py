"""Time for the sandbox: the quota windows, token expiry, job delays and latency all read it,
so tests can run a minute-long quota window in no time with a manual clock."""

from __future__ import annotations

import heapq
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class ManualClock:
    """Virtual time: `sleep(s)` returns once the clock reads its wake-up time, and the clock
    moves only to the earliest wake-up among the threads asleep, once they have all waited a
    moment of real time with nobody else moving it. Sleeps in parallel threads overlap as in
    real time (ten threads sleeping 5 s move it 5 s, not 50 s: the cumulative clock this
    replaced passed a 60 s quota window inside one call in flight), and a test still runs a
    minute-long quota window in milliseconds."""

    # Real time a sleeper waits for an earlier one (or for work under way) before moving the
    # clock itself: long enough for a thread that is about to sleep to say when it wakes.
    SETTLE_S = 0.002

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start
        self._cond = threading.Condition()
        self._wakeups: list[float] = []  # a heap: when each sleeping thread wakes

    def now(self) -> float:
        with self._cond:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._cond:
            wake = self._now + max(0.0, seconds)
            if wake > self._now:
                self._sleep_until(wake)
        time.sleep(0)  # let other threads run, as a real sleep would

    def _sleep_until(self, wake: float) -> None:
        """Under the condition's lock."""
        heapq.heappush(self._wakeups, wake)
        try:
            while self._now < wake:
                moved = self._now
                self._cond.wait(self.SETTLE_S)
                if self._now == moved and self._now < self._wakeups[0]:
                    self._now = self._wakeups[0]  # the earliest sleeper's time has come
                    self._cond.notify_all()
        finally:
            self._wakeups.remove(wake)
            heapq.heapify(self._wakeups)

    def advance(self, seconds: float) -> None:
        """The test moves time itself (no thread sleeps meanwhile)."""
        with self._cond:
            self._now += max(0.0, seconds)
            self._cond.notify_all()
