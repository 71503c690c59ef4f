"""plan/consistency.py: a saved plan re-derived — every tampering of a change's derived fields
or of an access change is named; a plan made by the planner holds together."""

from __future__ import annotations

import json
from dataclasses import replace

from reconciler.model import (
    AccessChange,
    AccessItem,
    AccessKey,
    AccessStep,
    AccountInfo,
    Change,
    Membership,
    Owners,
    Phase,
    Plan,
    Step,
    entry_json,
)
from reconciler.plan.consistency import inconsistencies

N, S, L = "Organization/north", "Organization/south", "Organization/legacy"
R = "Organization/research"  # additive, not propagated
P = "AccessPolicy/staff"
MANAGED = {
    N: AccountInfo("north", Membership.AUTHORITATIVE, True),
    S: AccountInfo("south", Membership.AUTHORITATIVE, True),
    R: AccountInfo("research", Membership.ADDITIVE, False),
}


def change(
    ref: str, before: tuple[str, ...], after: tuple[str, ...], steps: tuple[Step, ...]
) -> Change:
    add = tuple(a for a in after if a not in before)
    remove = tuple(a for a in before if a not in after)
    owners = Owners.of(MANAGED)
    tenants = tuple(sorted({f[1].tenant for a in add + remove if (f := owners.owner(a))}))
    return Change(ref, "v1", None, before, after, add, remove, tenants, steps)


def entry(account: str) -> str:
    return entry_json(AccessKey(P, "organization", account).entry())


def access_change(before: tuple[str, ...], after: tuple[str, ...]) -> AccessChange:
    revoked = [e for e in before if e not in after]
    granted = [e for e in after if e not in before]
    item = {entry(N): AccessItem(P, "organization", N, "north"),
            entry(S): AccessItem(P, "organization", S, "south")}  # fmt: skip
    first = tuple(e for e in before if e not in revoked)
    steps = (AccessStep(first, Phase.REVOKE), AccessStep(after, Phase.GRANT))
    return AccessChange(
        "ProjectMembership/m1", "v1", None, None, before, after,
        tuple(item[e] for e in granted), tuple(item[e] for e in revoked), steps,
    )  # fmt: skip


MOVE = change("Patient/p1", (S, L), (L, N), (Step((L, N), True),))
MIXED = change("Patient/p2", (L,), (L, N, R), (Step((L, N), True), Step((L, N, R), False)))
LOCATION = change("Location/l1", (L,), (L, N), (Step((L, N), False),))
MEMBER = access_change((entry(S), entry(L)), (entry(L), entry(N)))
PLAN = Plan(
    changes=(MOVE, MIXED),
    resource_changes=(LOCATION,),
    access_changes=(MEMBER,),
    managed=MANAGED,
    managed_access=tuple(AccessKey(P, "organization", a) for a in sorted(MANAGED)),
)


def test_a_plan_as_the_planner_makes_it_holds_together() -> None:
    assert inconsistencies(PLAN) == []


def test_every_tampered_field_of_a_change_is_named() -> None:
    cases = {
        replace(MOVE, add=()): "Patient/p1: add/remove do not follow from before/after",
        replace(
            MOVE, tenants=("north",)
        ): "Patient/p1: its tenants do not follow from its accounts",
        replace(MOVE, steps=(Step((L, N), False),)): (
            "Patient/p1: its steps are not the ones its accounts need"
        ),
        change("Patient/p1", (S, L), (S,), (Step((S,), True),)): (
            "Patient/p1: it would change unmanaged accounts (Organization/legacy)"
        ),
    }
    for tampered, problem in cases.items():
        assert inconsistencies(replace(PLAN, changes=(tampered,))) == [problem]


def test_mixed_propagation_needs_its_two_calls() -> None:
    one_call = replace(MIXED, steps=(Step((L, N, R), True),))
    assert inconsistencies(replace(PLAN, changes=(one_call,))) == [
        "Patient/p2: its steps are not the ones its accounts need"
    ]


def test_other_resources_are_set_without_propagation_and_patients_stay_patients() -> None:
    propagating = replace(LOCATION, steps=(Step((L, N), True),))
    assert inconsistencies(replace(PLAN, resource_changes=(propagating,))) == [
        "Location/l1: its steps are not the ones its accounts need"
    ]
    assert inconsistencies(replace(PLAN, changes=(LOCATION,), resource_changes=())) == [
        "Location/l1: not a Patient, listed among the patients"
    ]
    assert inconsistencies(replace(PLAN, changes=(), resource_changes=(MOVE,))) == [
        "Patient/p1: a Patient, listed among the other resources"
    ]


def test_every_tampered_access_change_is_named() -> None:
    foreign = entry_json({"policy": {"reference": "AccessPolicy/all"}})
    cases = {
        replace(MEMBER, after=(*MEMBER.after, foreign)): [
            "ProjectMembership/m1: it would change unmanaged access entries",
            "ProjectMembership/m1: its grants do not follow from before/after",
            "ProjectMembership/m1: its last step does not write its after list",
        ],
        replace(MEMBER, grant=()): [
            "ProjectMembership/m1: its grants do not follow from before/after"
        ],
        replace(MEMBER, revoke=()): [
            "ProjectMembership/m1: its revocations do not follow from before/after"
        ],
        replace(MEMBER, steps=(MEMBER.steps[0],)): [
            "ProjectMembership/m1: its last step does not write its after list"
        ],
        replace(MEMBER, steps=(AccessStep(MEMBER.before, Phase.REVOKE), MEMBER.steps[1])): [
            "ProjectMembership/m1: its first step is not the revocation"
        ],
    }
    for tampered, problems in cases.items():
        assert inconsistencies(replace(PLAN, access_changes=(tampered,))) == problems


def test_an_alias_may_be_removed_but_never_added() -> None:
    shouted = "Organization/NORTH"
    removal = change("Patient/p3", (shouted, L), (L,), (Step((L,), True),))
    assert inconsistencies(replace(PLAN, changes=(removal,))) == []
    added = change("Patient/p4", (L,), (L, shouted), (Step((L, shouted), True),))
    assert inconsistencies(replace(PLAN, changes=(added,))) == [
        "Patient/p4: it would add accounts in another form than their own (Organization/NORTH)"
    ]


def test_a_grant_written_in_another_form_than_it_shows_is_refused() -> None:
    # Shows organization=north (the reference); Medplum reads the valueString first: south.
    bent = json.loads(entry(N))
    bent["parameter"][0]["valueString"] = S
    after = (entry(L), entry_json(bent))
    tampered = replace(MEMBER, after=after, steps=(AccessStep(after, Phase.GRANT),), revoke=())
    problems = inconsistencies(replace(PLAN, access_changes=(tampered,)))
    assert (
        "ProjectMembership/m1: an entry it writes is not the canonical entry of its grant"
        in problems
    )
