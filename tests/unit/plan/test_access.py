"""plan/access.py: the pure access planner (design section 8)."""

from __future__ import annotations

import json
from typing import Any

from reconciler.model import (
    AccessKey,
    AccountRef,
    Grant,
    LiveMembership,
    LiveState,
    Location,
    Membership,
    Phase,
    Tenant,
    entry_json,
)
from reconciler.plan.access import plan_access

LOC = Location("t.yaml", 1, 1)
P = "AccessPolicy/staff"
NORTH, SOUTH, OTHER = "Organization/north", "Organization/south", "Organization/other"


def tenant(name: str, account: str, *, additive: bool = False, grants: int = 1) -> Tenant:
    return Tenant(
        name=name,
        account=AccountRef(LOC, reference=account),
        patients=(),
        location=LOC,
        membership=Membership.ADDITIVE if additive else Membership.AUTHORITATIVE,
        access=tuple(Grant(P, "organization", (), LOC) for _ in range(grants)),
    )


def entry(account: str, policy: str = P, name: str = "organization") -> str:
    return entry_json(AccessKey(policy, name, account).entry())


def member(ref: str, *entries: str, **kw: Any) -> LiveMembership:
    return LiveMembership(f"ProjectMembership/{ref}", "v1", tuple(entries), **kw)


def live(
    tenants: list[Tenant], memberships: list[LiveMembership], grants: dict[str, list[str]]
) -> LiveState:
    return LiveState(
        accounts={t.name: str(t.account.reference) for t in tenants},
        members={t.name: frozenset() for t in tenants},
        patients={},
        memberships={m.reference: m for m in memberships},
        grant_members={
            (name, 0): frozenset(f"ProjectMembership/{r}" for r in refs)
            for name, refs in grants.items()
        },
    )


def test_grant_to_a_member_with_unmanaged_entries_keeps_them_in_place() -> None:
    tenants = [tenant("north", NORTH)]
    billing = json.dumps({"policy": {"reference": "AccessPolicy/billing"}})
    m = member("m1", billing)
    (change,) = plan_access(tenants, live(tenants, [m], {"north": ["m1"]})).changes
    assert change.after == (billing, entry(NORTH))
    assert [i.tenant for i in change.grant] == ["north"] and change.revoke == ()
    assert [(s.phase, s.access) for s in change.steps] == [(Phase.GRANT, change.after)]


def test_moving_a_member_revokes_first_then_grants() -> None:
    tenants = [tenant("north", NORTH), tenant("south", SOUTH)]
    other = entry(OTHER)  # an account no tenant manages: unmanaged, kept
    m = member("m1", entry(NORTH), other)
    (change,) = plan_access(tenants, live(tenants, [m], {"south": ["m1"]})).changes
    assert change.before == (entry(NORTH), other)
    assert change.after == (other, entry(SOUTH))
    assert [i.account for i in change.revoke] == [NORTH]
    assert [i.account for i in change.grant] == [SOUTH]
    assert [(s.phase, s.access) for s in change.steps] == [
        (Phase.REVOKE, (other,)),
        (Phase.GRANT, (other, entry(SOUTH))),
    ]


def test_a_swap_of_the_only_entry_is_one_write_never_an_empty_list() -> None:
    tenants = [tenant("north", NORTH), tenant("south", SOUTH)]
    m = member("m1", entry(NORTH))
    (change,) = plan_access(tenants, live(tenants, [m], {"south": ["m1"]})).changes
    assert [(s.phase, s.access) for s in change.steps] == [(Phase.REVOKE, (entry(SOUTH),))]


def test_additive_tenants_never_revoke_and_order_alone_is_no_change() -> None:
    tenants = [tenant("north", NORTH), tenant("south", SOUTH, additive=True)]
    m = member("m1", entry(SOUTH), entry(NORTH))  # south not declared, but additive
    assert plan_access(tenants, live(tenants, [m], {"north": ["m1"]})).changes == []


def test_fail_open_is_refused_with_the_exact_error() -> None:
    tenants = [tenant("north", NORTH)]
    m = member("m1", entry(NORTH))  # its only entry would be revoked
    result = plan_access(tenants, live(tenants, [m], {"north": []}))
    assert result.changes == []
    assert result.problems == [
        "Error: ProjectMembership/m1 would be left with no access policy, which Medplum "
        "treats as unrestricted access"
    ]
    # With the legacy accessPolicy field set, revoking the last entry is safe.
    kept = member("m2", entry(NORTH), has_access_policy=True)
    (change,) = plan_access(tenants, live(tenants, [kept], {"north": []})).changes
    assert change.after == ()


def test_narrowing_and_admin_warnings() -> None:
    tenants = [tenant("north", NORTH)]
    everything = member("m1")
    admin = member("m2", entry(OTHER), admin=True)
    result = plan_access(tenants, live(tenants, [everything, admin], {"north": ["m1", "m2"]}))
    assert result.warnings == [
        "ProjectMembership/m1 has no access policy today, so it sees everything; this plan "
        "narrows it to tenant north",
        "ProjectMembership/m2 is a project admin: besides its tenants, it can read and change "
        "every membership and access policy",
    ]


def test_mass_grant_warning_past_ten_memberships() -> None:
    tenants = [tenant("north", NORTH)]
    members = [member(f"m{i}", entry(OTHER)) for i in range(11)]
    result = plan_access(tenants, live(tenants, members, {"north": [f"m{i}" for i in range(11)]}))
    assert len(result.changes) == 11
    assert result.warnings[-1] == (
        "the plan grants access to 11 memberships (more than 10); apply will refuse without "
        "--allow-mass-grant"
    )


def test_an_entry_of_another_parameter_name_or_policy_is_unmanaged() -> None:
    tenants = [tenant("north", NORTH)]
    foreign = entry(NORTH, name="clinic")  # same account, another parameter: not ours
    other_policy = entry(NORTH, policy="AccessPolicy/other")
    m = member("m1", foreign, other_policy)
    (change,) = plan_access(tenants, live(tenants, [m], {"north": ["m1"]})).changes
    assert change.after == (foreign, other_policy, entry(NORTH)) and change.revoke == ()
