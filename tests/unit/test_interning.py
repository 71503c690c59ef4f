"""model/interning.py: equal values become one object, up to a bound."""

from __future__ import annotations

from reconciler.model import Step
from reconciler.model.interning import Interner


def test_equal_values_become_one_object_and_unequal_ones_stay_apart() -> None:
    share = Interner()
    a, b = tuple(["Organization/x", "Organization/y"]), tuple(["Organization/x", "Organization/y"])
    assert a is not b
    assert share(a) is a and share(b) is a
    assert share(("Organization/x",)) == ("Organization/x",)
    assert share(Step(a, True)) is share(Step(b, True))
    assert share(Step(a, True)) is not share(Step(a, False))


def test_past_its_bound_it_keeps_nothing_more() -> None:
    share = Interner(limit=2)
    first, second, third = ("a",), ("b",), ("c",)
    share(first), share(second), share(third)
    late = tuple(["c"])
    assert share(late) is late  # not kept: the bound was reached
    assert share(tuple(["a"])) is first
