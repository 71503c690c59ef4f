"""apply/calls.py and the job timer: how many changes are in flight, and when a job is polled."""

from __future__ import annotations

from reconciler.apply.calls import Concurrency
from reconciler.medplum.operations import FIRST_POLL_S, JobTimer


def test_concurrency_backs_off_on_trouble_and_widens_while_throughput_rises() -> None:
    now = [0.0]
    throttled = [0]
    c = Concurrency(10, throttled=lambda: throttled[0], clock=lambda: now[0])
    assert c.limit == 10  # the cap, --parallelism, to start

    def round_of(duration: float, rate: float) -> None:
        """One round (max(20, 2 x limit) changes) at `rate` changes a second."""
        size = c.round_size()
        now[0] += size / rate
        for _ in range(size):
            c.finished(duration)

    round_of(0.1, 100)  # 100/s, latency 0.1: the references
    assert (c.limit, c.round_size()) == (10, 20)
    round_of(0.25, 50)  # latency more than doubled and throughput fell: once is noise
    assert c.limit == 10
    round_of(0.25, 50)  # twice in a row: one step back
    assert c.limit == 9
    round_of(0.1, 60)  # 60/s beats the last round's 50/s: widened by one
    assert c.limit == 10
    round_of(0.1, 60)  # no better than the last, and at the cap: stays
    assert c.limit == 10
    throttled[0] = 1  # a 429 or 503 meanwhile: halved at once
    round_of(0.1, 60)
    assert c.limit == 5
    round_of(0.1, 70)  # rising again: widened
    assert c.limit == 6
    assert c.history == [10, 9, 10, 5, 6]
    # A server slower for everyone: the references decay toward it, so after a step back or
    # two the limit holds instead of sinking to 1.
    for _ in range(40):
        round_of(0.5, 20)
    assert c.limit >= 4
    for _ in range(40):  # and when things improve it widens back to the cap, never past it
        round_of(0.1, 100 + 10 * c.limit)
    assert c.limit == 10


def test_the_job_timer_learns_how_long_jobs_take() -> None:
    timer = JobTimer()
    assert timer.expected() == FIRST_POLL_S
    timer.record(0.4)
    assert timer.expected() == 0.4  # the first job counts fully
    timer.record(0.2)
    assert abs(timer.expected() - 0.3) < 1e-9  # then a running average
    timer.record(0.0)
    assert abs(timer.expected() - (0.3 + (FIRST_POLL_S - 0.3) / 3)) < 1e-9
