"""apply/calls.py and the job timer: how many changes are in flight, and when a job is polled."""

from __future__ import annotations

from reconciler.apply.calls import Concurrency
from reconciler.medplum.operations import FIRST_POLL_S, JobTimer


def test_concurrency_backs_off_on_trouble_and_widens_while_throughput_rises() -> None:
    now = [0.0]
    throttled = [0]
    c = Concurrency(10, throttled=lambda: throttled[0], clock=lambda: now[0])
    assert c.limit == 10  # the cap, --parallelism, to start

    def round_of(duration: float, elapsed: float) -> None:
        now[0] += elapsed
        for _ in range(c.limit):
            c.finished(duration)

    round_of(0.1, 1.0)  # 10 in 1 s, latency 0.1: the best seen
    assert c.limit == 10
    round_of(0.25, 1.5)  # the median latency more than doubled and throughput fell: once
    assert c.limit == 10
    round_of(0.25, 1.5)  # twice in a row: halved
    assert c.limit == 5
    round_of(0.1, 0.5)  # 5 in 0.5 s: 10/s beats the last round's 6.7/s: widened by one
    assert c.limit == 6
    round_of(0.1, 0.6)  # 6 in 0.6 s: 10/s again, no better than the last: stays
    assert c.limit == 6
    round_of(0.1, 0.4)  # 15/s: widened
    assert c.limit == 7
    throttled[0] = 1  # a 429 or 503 meanwhile: halved
    round_of(0.1, 0.4)
    assert c.limit == 3
    assert c.history == [10, 5, 6, 7, 3]
    for _ in range(40):  # never past the cap
        round_of(0.1, 0.01 / (c.limit + 1))
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
