"""apply/calls.py and the job timer: how many changes are in flight, and when a job is polled."""

from __future__ import annotations

from reconciler.apply.calls import Concurrency
from reconciler.medplum.operations import FIRST_POLL_S, JobTimer


def test_concurrency_widens_while_throughput_rises_and_halves_on_trouble() -> None:
    now = [0.0]
    throttled = [0]
    c = Concurrency(10, throttled=lambda: throttled[0], clock=lambda: now[0])
    assert c.limit == 5  # half the cap to start

    def round_of(duration: float, elapsed: float) -> None:
        for _ in range(c.limit):
            c.finished(duration)
        now[0] += elapsed

    # Each round: limit changes in `elapsed` seconds. Faster rounds widen by one.
    now[0] = 1.0
    round_of(0.1, 0)  # 5 in 1 s: 5/s, better than nothing seen: 6
    assert c.limit == 6
    now[0] += 1.0
    round_of(0.1, 0)  # 6 in 1 s: better: 7
    assert c.limit == 7
    now[0] += 2.0
    round_of(0.1, 0)  # 7 in 2 s: slower than 6/s: stays
    assert c.limit == 7
    now[0] += 0.5
    round_of(0.3, 0)  # a median latency three times the best: halved
    assert c.limit == 3
    now[0] += 0.1
    throttled[0] = 1  # a 429 or 503 meanwhile: halved again
    round_of(0.1, 0)
    assert c.limit == 1
    assert c.history == [5, 6, 7, 3, 1]
    for _ in range(40):  # never past the cap
        now[0] += 0.01 / (c.limit + 1)
        round_of(0.1, 0)
    assert c.limit <= 10


def test_the_job_timer_learns_how_long_jobs_take() -> None:
    timer = JobTimer()
    assert timer.expected() == FIRST_POLL_S
    timer.record(0.4)
    assert timer.expected() == 0.4  # the first job counts fully
    timer.record(0.2)
    assert abs(timer.expected() - 0.3) < 1e-9  # then a running average
    timer.record(0.0)
    assert abs(timer.expected() - (0.3 + (FIRST_POLL_S - 0.3) / 3)) < 1e-9
