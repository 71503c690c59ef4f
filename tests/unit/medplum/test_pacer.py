"""The pacer (medplum/ratelimit.py): requests sent only when the quota window can take them,
a synchronous call's whole cost reserved first, async jobs' charges pledged, polls past the
pledges, a 429 that blocks everyone. A manual clock: no real waiting."""

from __future__ import annotations

import json

import pytest

from reconciler.medplum.ratelimit import Pacer, parse_ratelimit, throttle_wait_s
from tests.unit.medplum.test_client import outcome


def header(remaining: int, reset_s: int) -> str:
    return f'"requests";r=59999;t=60, "fhirInteractions";r={remaining};t={reset_s}'


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def pacer(clock: Clock, reserve: int = 100) -> Pacer:
    return Pacer(reserve_points=reserve, clock=lambda: clock.now, sleep=clock.sleep)


def test_parsing() -> None:
    limits = parse_ratelimit('"requests";r=59999;t=60, "fhirInteractions";r=900;t=12')
    assert limits["requests"].remaining == 59999 and limits["fhirInteractions"].remaining == 900
    assert limits["fhirInteractions"].reset_s == 12
    assert parse_ratelimit("garbage") == {} and parse_ratelimit(None) == {}
    assert throttle_wait_s(outcome("throttled", "x", json.dumps({"_msBeforeNext": 1500}))) == 1.5


def test_a_write_waits_for_the_reset_when_the_window_cannot_take_it() -> None:
    clock = Clock()
    p = pacer(clock, reserve=1000)
    p.observe(header(5000, 30), cost=20)
    assert p.admit(100) == 0
    clock.now = 27.0
    p.observe(header(900, 3), cost=100)  # 900 left, 1,000 kept back: a write waits
    assert p.admit(100) == pytest.approx(3.0)
    assert p.admit(0) == 0  # not a FHIR request: never held


def test_requests_in_flight_count_against_the_window() -> None:
    clock = Clock()
    p = pacer(clock, reserve=100)
    p.observe(header(400, 10), cost=20)
    assert p.admit(100) == 0 and p.admit(100) == 0 and p.admit(100) == 0  # 300 in flight
    for remaining in (280, 180, 80):  # they are answered: 80 left, under the 100 kept back
        p.observe(header(remaining, 10), cost=100)
    assert p.admit(100) == pytest.approx(10.0)  # a fourth waits for the reset


def test_what_is_in_flight_at_a_reset_still_counts_in_the_new_window() -> None:
    # A call under way at the reset may be charged to the new window: until it returns its
    # reservation stays (a manual-clock run cut a call reserved in the new window otherwise).
    clock = Clock()
    p = pacer(clock, reserve=100)
    p.observe(header(800, 5), cost=20)
    first = p.reserve(420)
    clock.now += 5.0  # the window resets while the first is under way
    assert p.admit(1) == 0  # the guessed new window: 820 - 420 in flight
    p.observe(header(819, 60), cost=1)
    waited: list[float] = []

    def second() -> None:
        hold = p.reserve(420)  # 819 - 420 - 100 < 420: waits for the first to return
        waited.append(clock.now)
        p.release(hold)

    import threading

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive() and waited == []  # still waiting: the first has not returned
    p.observe(header(399, 60), cost=420, reserved=True)
    p.release(first)
    thread.join(5)
    assert not thread.is_alive() and waited  # it went once the first's charge was seen


def test_a_synchronous_call_reserves_its_whole_cost_first() -> None:
    clock = Clock()
    p = pacer(clock, reserve=100)
    p.observe(header(800, 5), cost=20)
    first = p.reserve(420)  # 120 + 100·3 fits: 800 - 100 kept back
    assert clock.slept == []
    p.observe(header(380, 5), cost=420, reserved=True)  # the first returned in the old window
    p.release(first)
    second = p.reserve(420)  # 380 - 100 kept back < 420: waits for the next window
    assert clock.now == pytest.approx(5.0) and second.exact
    p.release(second)
    assert p.can_ever_take(700) and not p.can_ever_take(800)  # the window is ~820


def test_polls_pass_the_pledges_of_running_jobs() -> None:
    clock = Clock()
    p = pacer(clock, reserve=100)
    p.observe(header(3000, 6), cost=20)
    jobs = [p.pledge(620) for _ in range(5)]  # 3,100 pledged: jobs charge from the server
    assert p.admit(1) == 0  # a poll goes while the window has points, whatever is pledged
    p.observe(header(2500, 6), cost=1)  # 499 of the drop were the jobs': 2,601 still to come
    assert p.admit(100) == pytest.approx(6.0)  # a writer waits for the reset
    for job in jobs:
        p.release(job)
    assert p.admit(100) == 0  # the jobs ended: nothing is pledged any more


def test_a_new_window_settles_what_the_old_one_could_hold_and_big_jobs_never_block_forever() -> (
    None
):
    clock = Clock()
    p = pacer(clock, reserve=100)
    p.observe(header(3000, 6), cost=20)
    big = p.pledge(50_000)  # bigger than any window: counted as one window's worth
    assert big.points < 3_000
    assert p.admit(100) == pytest.approx(6.0)  # past the reset a writer goes again
    p.observe(header(2900, 60), cost=100)
    p.release(big)


def test_a_429_blocks_every_request_until_its_wait_is_over() -> None:
    clock = Clock()
    p = pacer(clock)
    p.observe(header(3000, 60), cost=20)
    p.block_for(2.5)
    assert p.admit(1) == pytest.approx(2.5) and p.admit(1) == 0


def test_a_guessed_new_window_is_not_reserved_from_while_answers_are_still_to_come() -> None:
    # The header reports the tighter of two limiters, so an announced reset can come early: our
    # clock passes it, the window is only guessed to have opened. A synchronous call reserved on
    # that guess was cut when the answers in flight showed the old window still running.
    import threading

    clock = Clock()
    p = pacer(clock, reserve=100)
    p.observe(header(3000, 5), cost=20)
    first = p.reserve(520)
    clock.now += 5.0  # past the announced reset, with the first still under way
    reserved: list[float] = []

    def second() -> None:
        hold = p.reserve(520)
        reserved.append(clock.now)
        p.release(hold)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive() and reserved == []  # waits for an answer, not on the guess
    p.observe(header(900, 25), cost=520, reserved=True)  # the old window runs on: 900 left
    p.release(first)
    thread.join(5)
    assert not thread.is_alive() and reserved  # then 900 - 100 kept back >= 520: it went
