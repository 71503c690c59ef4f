"""benchmarks/server_bound.py: the server-bound target is the median over rounds of ours
against the better mode's mean of the direct rates measured before and after it."""

from __future__ import annotations

from benchmarks.harness import Run
from benchmarks.server_bound import Round, figures


def test_a_round_compares_ours_with_the_better_modes_mean_of_before_and_after() -> None:
    r = Round(before={"sync": 300.0, "async": 140.0}, after={"sync": 340.0, "async": 130.0},
              ours=288.0)  # fmt: skip
    assert (r.floor("sync"), r.floor("async"), r.best_floor) == (320.0, 135.0, 320.0)
    assert r.ratio == 0.9
    assert r.ratio_to_best_sample == 288.0 / 340.0  # the stricter figure, printed beside it
    assert r.figures() == {
        "direct_sync_per_s": [300.0, 340.0], "direct_async_per_s": [140.0, 130.0],
        "ours_per_s": 288.0, "ratio": 0.9,
    }  # fmt: skip


def test_the_target_is_the_median_of_the_rounds() -> None:
    rounds = [
        Round({"sync": 300.0, "async": 100.0}, {"sync": 300.0, "async": 100.0}, 240.0),  # 0.8
        Round({"sync": 100.0, "async": 400.0}, {"sync": 100.0, "async": 400.0}, 380.0),  # 0.95
        Round({"sync": 200.0, "async": 100.0}, {"sync": 200.0, "async": 100.0}, 180.0),  # 0.9
    ]
    plan, bare = Run("plan", 1.0, 1, None), Run("bare", 1.0, 1, None)
    plan.extra, bare.extra = {"work_s": 0.6}, {"work_s": 0.5}
    measured, targets = figures(0.5, rounds, plan, bare)
    assert targets == {
        "plan_work_over_listing (<= 1.5)": 1.0,
        "plan_with_estimate_work_over_listing": 1.2,
        "ours_over_direct_rate (>= 0.9)": 0.9,
    }
    assert (measured["direct_sync_per_s"], measured["direct_async_per_s"]) == (200.0, 100.0)
    assert measured["ours_per_s"] == 240.0
    assert [r["ratio"] for r in measured["rounds"]] == [0.8, 0.95, 0.9]
