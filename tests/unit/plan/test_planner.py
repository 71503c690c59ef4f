"""The planner as a table: (tenants, live) → expected changes, one row per rule of section 3."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from reconciler.model import (
    AccountRef,
    Change,
    LiveResource,
    LiveState,
    Location,
    Membership,
    Step,
    Tenant,
)
from reconciler.plan.planner import plan

LOC = Location("t.yaml", 1, 1)
N, S, R, LEGACY, DR = (
    "Organization/north",
    "Organization/south",
    "Organization/research",
    "Organization/legacy",
    "Practitioner/dr",
)


def tenant(name: str, account: str, *, additive: bool = False, propagate: bool = True) -> Tenant:
    return Tenant(
        name=name,
        account=AccountRef(LOC, reference=account),
        patients=(),
        location=LOC,
        membership=Membership.ADDITIVE if additive else Membership.AUTHORITATIVE,
        propagate=propagate,
    )


NORTH, SOUTH = tenant("north", N), tenant("south", S)
RESEARCH = tenant("research", R, additive=True, propagate=False)


@dataclass
class Case:
    tenants: list[Tenant]
    members: dict[str, set[str]]
    live: dict[str, list[str]]  # patient → live accounts
    expected: dict[str, tuple[list[str], list[Step]]] = field(
        default_factory=dict
    )  # → after, steps


def run(case: Case) -> dict[str, Change]:
    state = LiveState(
        accounts={t.name: str(t.account.reference) for t in case.tenants},
        members={t.name: frozenset(case.members.get(t.name, set())) for t in case.tenants},
        patients={
            p: LiveResource(p, f"v-{p}", tuple(accts), f"urn:mrn|{p[-1]}")
            for p, accts in case.live.items()
        },
    )
    result = plan(case.tenants, state)
    assert [c.ref for c in result.changes] == sorted(c.ref for c in result.changes)
    return {c.ref: c for c in result.changes}


CASES = {
    "fresh assignment": Case(
        [NORTH],
        {"north": {"Patient/1"}},
        {"Patient/1": []},
        {"Patient/1": ([N], [Step((N,), True)])},
    ),
    "already correct is no change": Case([NORTH], {"north": {"Patient/1"}}, {"Patient/1": [N]}),
    "order-only difference is no change": Case(
        [NORTH, SOUTH], {"north": {"Patient/1"}, "south": {"Patient/1"}}, {"Patient/1": [S, N]}
    ),
    "unmanaged accounts kept in place": Case(
        [NORTH],
        {"north": {"Patient/1"}},
        {"Patient/1": [LEGACY, DR]},
        {"Patient/1": ([LEGACY, DR, N], [Step((LEGACY, DR, N), True)])},
    ),
    "authoritative removes non-members, keeps unmanaged": Case(
        [NORTH, SOUTH],
        {"north": {"Patient/1"}},
        {"Patient/1": [S, LEGACY]},
        {"Patient/1": ([LEGACY, N], [Step((LEGACY, N), True)])},
    ),
    "authoritative removal only": Case(
        [NORTH],
        {"north": set()},
        {"Patient/2": [LEGACY, N]},
        {"Patient/2": ([LEGACY], [Step((LEGACY,), True)])},
    ),
    "additive never removes": Case([RESEARCH], {"research": set()}, {"Patient/1": [R]}),
    "additive adds without propagation": Case(
        [RESEARCH],
        {"research": {"Patient/1"}},
        {"Patient/1": [LEGACY]},
        {"Patient/1": ([LEGACY, R], [Step((LEGACY, R), False)])},
    ),
    "patient in two tenants gets both, in load order": Case(
        [SOUTH, NORTH],
        {"north": {"Patient/1"}, "south": {"Patient/1"}},
        {"Patient/1": []},
        {"Patient/1": ([S, N], [Step((S, N), True)])},
    ),
    "mixed propagation makes two calls": Case(
        [NORTH, SOUTH, RESEARCH],
        {"north": {"Patient/1"}, "research": {"Patient/1"}},
        {"Patient/1": [S, LEGACY]},
        {"Patient/1": ([LEGACY, N, R], [Step((LEGACY, N), True), Step((LEGACY, N, R), False)])},
    ),
    "unmanaged Practitioner account is kept": Case(
        [NORTH],
        {"north": set()},
        {"Patient/1": [DR, N]},
        {"Patient/1": ([DR], [Step((DR,), True)])},
    ),
    "empty manifests change nothing": Case([], {}, {"Patient/1": [N, S]}),
    "several patients sorted": Case(
        [NORTH],
        {"north": {"Patient/b", "Patient/a"}},
        {"Patient/b": [], "Patient/a": [], "Patient/c": [N]},
        {
            "Patient/a": ([N], [Step((N,), True)]),
            "Patient/b": ([N], [Step((N,), True)]),
            "Patient/c": ([], [Step((), True)]),
        },
    ),
    # An account is its id (design section 11): another type, case or version is an alias.
    "an alias on a non-member is removed by an authoritative tenant": Case(
        [NORTH],
        {"north": set()},
        {"Patient/3": [LEGACY, "Practitioner/north", "Organization/NORTH", f"{N}/_history/1"]},
        {"Patient/3": ([LEGACY], [Step((LEGACY,), True)])},
    ),
    "an alias on a member is that account: nothing to add": Case(
        [NORTH], {"north": {"Patient/4"}}, {"Patient/4": ["Organization/NORTH"]}
    ),
    "an additive tenant keeps an alias": Case(
        [RESEARCH], {"research": set()}, {"Patient/5": ["Practitioner/RESEARCH"]}
    ),
    "absolute URLs and display-only entries are not aliases": Case(
        [NORTH],
        {"north": set()},
        {"Patient/6": [f"https://elsewhere.example/fhir/R4/{N}", 'raw:{"display":"north"}']},
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_planner_table(name: str) -> None:
    case = CASES[name]
    changes = run(case)
    assert {p: (list(c.after), list(c.steps)) for p, c in changes.items()} == case.expected


def test_change_details_add_remove_tenants_and_primary() -> None:
    case = Case(
        [NORTH, SOUTH, RESEARCH],
        {"north": {"Patient/1"}, "research": {"Patient/1"}},
        {"Patient/1": [S, LEGACY]},
    )
    change = run(case)["Patient/1"]
    assert change.before == (S, LEGACY)
    assert change.add == (N, R) and change.remove == (S,)
    assert change.tenants == ("north", "research", "south")
    assert change.version_id == "v-Patient/1" and change.identifier == "urn:mrn|1"
    assert change.primary_changes is True  # meta.account moves from south to legacy
    same_first = run(Case([NORTH], {"north": {"Patient/1"}}, {"Patient/1": [LEGACY]}))["Patient/1"]
    assert same_first.primary_changes is False


def test_summary_counts() -> None:
    case = Case(
        [NORTH, SOUTH], {"north": {"Patient/1", "Patient/2"}}, {"Patient/1": [S], "Patient/2": []}
    )
    state = LiveState(
        accounts={"north": N, "south": S},
        members={"north": frozenset({"Patient/1", "Patient/2"}), "south": frozenset()},
        patients={p: LiveResource(p, "v", tuple(a)) for p, a in case.live.items()},
    )
    result = plan(case.tenants, state)
    assert (len(result.changes), result.added, result.removed) == (2, 2, 1)
    assert not result.is_empty


# --- other resources (design section 9) ------------------------------------------------------


def test_resources_follow_the_same_rule_with_scope_per_named_type() -> None:
    from reconciler.model import LiveResource as Live
    from reconciler.model import LiveState, ResourceSelector, SelectorKind, Tenant
    from reconciler.plan.planner import plan as make_plan

    loc = Location("t.yaml", 1, 1)
    north = Tenant(
        name="north",
        account=AccountRef(loc, reference="Organization/north"),
        patients=(),
        location=loc,
        resources=(ResourceSelector(SelectorKind.ID, "Location", "Location/l1", loc),),
    )
    live = LiveState(
        accounts={"north": "Organization/north"},
        members={"north": frozenset()},
        patients={},
        resources={
            "Location/l1": Live("Location/l1", "v1", ("Organization/legacy",)),
            # a Location of north's no manifest lists: authoritative removes it (type named)
            "Location/l2": Live("Location/l2", "v1", ("Organization/north",)),
            # a Practitioner carrying north: the tenant names no Practitioner, so it stays
            "Practitioner/d1": Live("Practitioner/d1", "v1", ("Organization/north",)),
        },
        resource_members={"north": frozenset({"Location/l1"})},
    )
    result = make_plan([north], live)
    assert result.changes == ()
    first, second = result.resource_changes
    assert (first.ref, first.after, first.add) == (
        "Location/l1",
        ("Organization/legacy", "Organization/north"),
        ("Organization/north",),
    )
    assert [(s.accounts, s.propagate) for s in first.steps] == [(first.after, False)]
    assert (second.ref, second.after, second.remove) == (
        "Location/l2",
        (),
        ("Organization/north",),
    )
    assert result.added == 1 and result.removed == 1


def test_apply_batches_start_with_three_calls_a_worker_then_full_batches() -> None:
    from reconciler.model import apply_batches

    assert apply_batches(1000, 10) == [30, *[100] * 9, 70]
    assert apply_batches(25, 10) == [25]
    assert apply_batches(5, 1) == [3, 2]
    assert apply_batches(500, 20, size=50) == [60, *[50] * 8, 40]
    assert apply_batches(0, 10) == []
