"""How apply sends its `$set-accounts` calls: which go synchronously and which through a job
(by compartment size and the quota window, medplum/costs.py), and how many are in flight — a
window that widens while throughput rises and narrows on latency growth, 429 or 503."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence

from reconciler.apply.report import Report
from reconciler.logs import get_logger
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.costs import SYNC_MAX_COMPARTMENT, set_accounts_cost
from reconciler.medplum.errors import MedplumError
from reconciler.model import Change, KnownSizes, Plan

log = get_logger("reconciler.apply.calls")

MODES = ("auto", "sync", "async")
# How long sizes apply's own plan read stand in for a batch's read. A batch's sizes are read
# before its first call, and in a quota-bound apply its last call goes up to a window later:
# a size a minute old is no staler than those. Past it, a batch reads its own again.
SIZES_FRESH_S = 60.0


class CallModes:
    """Compartment sizes (read per batch, one search, unless apply's own plan read them less
    than SIZES_FRESH_S ago) and the mode of each propagating call."""

    def __init__(self, client: MedplumClient, propagate_with: str = "auto") -> None:
        self.client = client
        self.known: KnownSizes | None = None  # the plan's, when apply planned itself
        self.propagate_with = propagate_with  # auto; sync or async: as the person asked
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self.counts = {"sync": 0, "async": 0}  # propagating calls, by how they went
        self._spent_before = 0

    def read_sizes(self, batch: Sequence[Change]) -> None:
        refs = [c.ref for c in batch if c.ref.startswith("Patient/")
                and any(s.propagate for s in c.steps)]  # fmt: skip
        known = self.known
        if known is not None and time.monotonic() - known.read_at < SIZES_FRESH_S:
            planned = {ref: known.sizes[ref] for ref in refs if ref in known.sizes}
            with self._lock:
                self._sizes.update(planned)
            refs = [ref for ref in refs if ref not in planned]
        if not refs:
            return
        try:
            sizes = self.client.compartment_sizes(refs)
        except MedplumError as exc:  # not known: those calls go async, as before
            log.warning("could not read compartment sizes", error=str(exc))
            return
        with self._lock:
            self._sizes.update(sizes)

    def mode(self, change: Change) -> tuple[int | None, bool]:
        """(compartment size, whether to go async): synchronously when the compartment is
        small (no HTTP timeout, under the propagation cap) and one quota window can hold the
        whole call — the pacer then reserves it before sending; async otherwise (its job
        sleeps through resets). Waiting for a window that can hold a synchronous call costs
        less than a job's 200 points and ends no later."""
        with self._lock:
            size = self._sizes.get(change.ref)
        if self.propagate_with != "auto":
            return size, self.propagate_with == "async"
        if size is None:
            return None, True
        cost = set_accounts_cost(size, propagate=True, asynchronous=False)
        return size, size > SYNC_MAX_COMPARTMENT or not self.client.pacer.can_ever_take(cost)

    def pace(self, plan: Plan, parallelism: int) -> None:
        """What the pacer is told before the writes: the share a job of unknown compartment
        pledges, and the reserve for our own small requests (a poll, a re-read each)."""
        per_change = 500
        if plan.estimate and plan.changes:
            per_change = max(100, plan.estimate.quota_points // len(plan.changes))
        self.known = plan.known_sizes
        self.client.pacer.estimated_change_points = per_change
        self.client.pacer.reserve_points = 25 * parallelism
        self._spent_before = self.client.pacer.spent_seen

    def settle(self, report: Report, plan: Plan) -> None:
        """How the calls went, and points estimated against seen spent, into the report."""
        report.sync_calls, report.async_calls = self.counts["sync"], self.counts["async"]
        report.points_estimated = plan.estimate.quota_points if plan.estimate else None
        if self.client.pacer.remaining is not None:
            report.points_spent = self.client.pacer.spent_seen - self._spent_before
        log.info(
            "quota",
            points_estimated=report.points_estimated,
            points_spent=report.points_spent,
            sync_calls=report.sync_calls,
            async_calls=report.async_calls,
        )

    def count(self, propagate: bool, asynchronous: bool) -> None:
        if propagate:
            with self._lock:
                self.counts["async" if asynchronous else "sync"] += 1


class Concurrency:
    """How many changes are in flight: starts at `--parallelism` (its cap). A round is
    max(20, 2 x limit) finished changes. It halves when the server answered 429 or 503 during
    a round; it steps back by one when two rounds in a row took more than twice the reference
    latency while their throughput fell below 80 % of the reference rate; and it widens by one
    while a round's throughput beats the last one's. The references (best latency, best rate)
    are reset to what is seen at each back-off and decay by 10 % a round toward what is seen,
    so a server that is slower for everyone is not mistaken for one we overload."""

    MIN_ROUND = 20

    def __init__(
        self,
        cap: int,
        *,
        throttled: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cap = max(1, cap)
        self.limit = self.cap
        self.throttled = throttled  # the client's count of 429 and 503 answers
        self.clock = clock
        self._lock = threading.Lock()
        self._round: list[float] = []
        self._round_started = clock()
        self._last_rate = 0.0
        self._best_rate = 0.0
        self._slow_rounds = 0  # rounds in a row slower and less productive than the references
        self._best_latency: float | None = None
        self._seen_throttled = throttled()
        self.history: list[int] = [self.limit]

    def round_size(self) -> int:
        return max(self.MIN_ROUND, 2 * self.limit)

    def finished(self, duration_s: float) -> None:
        """One change finished after `duration_s`."""
        with self._lock:
            self._round.append(duration_s)
            if len(self._round) < self.round_size():
                return
            now = self.clock()
            elapsed = max(now - self._round_started, 1e-6)
            rate = len(self._round) / elapsed
            latency = statistics.median(self._round)
            throttled = self.throttled()
            # Latency growth alone is no reason (a busy server answers slower at the same
            # throughput): it counts when the throughput fell with it.
            slow = (
                self._best_latency is not None
                and latency > 2 * self._best_latency
                and rate < 0.8 * self._best_rate
            )
            self._slow_rounds = self._slow_rounds + 1 if slow else 0
            backed_off = True
            if throttled > self._seen_throttled:
                self.limit = max(1, self.limit // 2)
            elif self._slow_rounds >= 2:
                self.limit = max(1, self.limit - 1)
            else:
                backed_off = False
                if rate > self._last_rate * 1.05 and self.limit < self.cap:
                    self.limit += 1
            if backed_off or self._best_latency is None:
                # What is seen now is the new reference: one step back per slowdown, not one
                # every two rounds while the server stays slower for everyone.
                self._slow_rounds = 0
                self._best_rate, self._best_latency = rate, latency
            else:
                self._best_rate = max(rate, 0.9 * self._best_rate)
                self._best_latency = min(latency, 1.1 * self._best_latency)
            self._last_rate = rate
            self._seen_throttled = throttled
            self._round = []
            self._round_started = now
            if self.history[-1] != self.limit:
                self.history.append(self.limit)
