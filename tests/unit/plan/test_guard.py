"""The removal guard and the estimate line: pure functions over a plan."""

from __future__ import annotations

from reconciler.model import (
    AccountInfo,
    AccountRef,
    Change,
    Estimate,
    LiveResource,
    LiveState,
    Location,
    MassRemoval,
    Membership,
    Plan,
    Step,
    Tenant,
)
from reconciler.plan.estimate import estimate_line
from reconciler.plan.guard import mass_removals, removal_problems

LOC = Location("t.yaml", 1, 1)
ORG = "Organization/clinic"


def scenario(members: int, removed: int) -> tuple[Plan, list[Tenant], LiveState]:
    tenant = Tenant("clinic", AccountRef(LOC, reference=ORG), (), LOC)
    patients = {f"Patient/{i}": LiveResource(f"Patient/{i}", "v", (ORG,)) for i in range(members)}
    changes = tuple(
        Change(f"Patient/{i}", "v", None, (ORG,), (), (), (ORG,), ("clinic",), (Step((), True),))
        for i in range(removed)
    )
    managed = {ORG: AccountInfo("clinic", Membership.AUTHORITATIVE, True)}
    live = LiveState({"clinic": ORG}, {"clinic": frozenset()}, patients)
    return Plan(changes=changes, managed=managed), [tenant], live


def test_more_than_half_and_more_than_ten_trips_the_guard() -> None:
    plan, tenants, live = scenario(members=20, removed=11)
    assert mass_removals(plan, tenants, live) == [MassRemoval("clinic", 11, 20)]
    assert MassRemoval("clinic", 11, 20).describe() == (
        "tenant 'clinic' would lose 11 of its 20 current members (55 %)"
    )


def test_half_or_ten_or_fewer_do_not() -> None:
    assert mass_removals(*scenario(members=22, removed=11)) == []  # exactly half
    assert mass_removals(*scenario(members=12, removed=10)) == []  # 10 patients: too few


def test_problems_respect_allow_and_max_removals() -> None:
    plan, tenants, live = scenario(members=20, removed=15)
    mass = mass_removals(plan, tenants, live)
    assert removal_problems(plan, mass, allow_mass_removal=True, max_removals=None) == []
    assert removal_problems(plan, mass, allow_mass_removal=False, max_removals=None) == [
        "tenant 'clinic' would lose 15 of its 20 current members (75 %)"
    ]
    assert removal_problems(plan, mass, allow_mass_removal=True, max_removals=14) == [
        "the plan removes 15 accounts, more than --max-removals 14"
    ]


def test_estimate_line() -> None:
    data = Estimate(
        writes=1240,
        patient_writes=1000,
        compartment_writes=240,
        quota_points=124_000,
        assumed_points_per_minute=50_000,
        minutes=2.48,
        sync_calls=990,
        async_calls=10,
    )
    assert estimate_line(data) == (
        "Estimated cost: 1,000 $set-accounts (990 synchronous, 10 async) and 240 compartment "
        "writes ≈ 124,000 quota points ≈ 2.5 min at an assumed 50,000 points/min"
    )
    one = Estimate(1, 1, 1, 100, 50_000, 0.002)  # without propagation: no split to name
    assert estimate_line(one) == (
        "Estimated cost: 1 $set-accounts and 1 compartment write ≈ 100 quota points ≈ 0 s at an "
        "assumed 50,000 points/min"
    )
