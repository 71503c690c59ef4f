"""The planner: a pure function from (tenants, live state) to a Plan. No I/O here.

Semantics are design section 3: managed accounts are the tenants' accounts; every other account
is unmanaged and kept in place; authoritative tenants remove their account from non-members,
additive ones never remove; new accounts are appended in tenant load order; order-only
differences are no change.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.model import AccountInfo, Change, LiveState, Plan, Step, Tenant


def managed_accounts(tenants: Sequence[Tenant], live: LiveState) -> dict[str, AccountInfo]:
    return {live.accounts[t.name]: AccountInfo(t.name, t.membership, t.propagate) for t in tenants}


def desired_accounts(
    reference: str, current: Sequence[str], tenants: Sequence[Tenant], live: LiveState
) -> list[str]:
    drop = {
        live.accounts[t.name]
        for t in tenants
        if t.authoritative and reference not in live.members[t.name]
    }
    desired = [a for a in current if a not in drop]
    for tenant in tenants:
        account = live.accounts[tenant.name]
        if reference in live.members[tenant.name] and account not in desired:
            desired.append(account)
    return desired


def desired_resource_accounts(
    reference: str, current: Sequence[str], tenants: Sequence[Tenant], live: LiveState
) -> list[str]:
    """The same rule for other resources (design section 9), with authoritative scope per
    type: a tenant removes its account only from resources of the types it names."""
    rtype = reference.split("/", 1)[0]
    drop = {
        live.accounts[t.name]
        for t in tenants
        if t.authoritative
        and rtype in t.resource_types
        and reference not in live.resource_members.get(t.name, frozenset())
    }
    desired = [a for a in current if a not in drop]
    for tenant in tenants:
        account = live.accounts[tenant.name]
        member = reference in live.resource_members.get(tenant.name, frozenset())
        if member and account not in desired:
            desired.append(account)
    return desired


def steps_for(
    before: Sequence[str],
    after: Sequence[str],
    managed: dict[str, AccountInfo],
) -> tuple[Step, ...]:
    """The `$set-accounts` calls that take `before` to `after`. Medplum propagates the whole
    difference of one call, so mixed propagating/non-propagating changes need two calls."""
    add = [a for a in after if a not in before]
    remove = [a for a in before if a not in after]
    changed = add + remove
    propagating = {a for a in changed if managed[a].propagate}
    if len(propagating) == len(changed):
        return (Step(tuple(after), True),)
    if not propagating:
        return (Step(tuple(after), False),)
    first = [a for a in before if a not in propagating] + [a for a in add if a in propagating]
    return (Step(tuple(first), True), Step(tuple(after), False))


def change_for(
    reference: str,
    version_id: str,
    identifier: str | None,
    before: Sequence[str],
    after: Sequence[str],
    managed: dict[str, AccountInfo],
    *,
    propagate: bool = True,
) -> Change | None:
    """`propagate=False` for resources other than patients: Medplum propagates only from a
    Patient, so their accounts are set in one call without it."""
    if set(before) == set(after):
        return None
    add = tuple(a for a in after if a not in before)
    remove = tuple(a for a in before if a not in after)
    return Change(
        patient=reference,
        version_id=version_id,
        identifier=identifier,
        before=tuple(before),
        after=tuple(after),
        add=add,
        remove=remove,
        tenants=tuple(sorted({managed[a].tenant for a in add + remove})),
        steps=steps_for(before, after, managed) if propagate else (Step(tuple(after), False),),
    )


def plan(tenants: Sequence[Tenant], live: LiveState) -> Plan:
    managed = managed_accounts(tenants, live)
    changes: list[Change] = []
    for reference in sorted(live.patients):
        patient = live.patients[reference]
        after = desired_accounts(reference, patient.accounts, tenants, live)
        change = change_for(
            reference, patient.version_id, patient.identifier, patient.accounts, after, managed
        )
        if change is not None:
            changes.append(change)
    resource_changes: list[Change] = []
    for reference in sorted(live.resources):
        resource = live.resources[reference]
        after = desired_resource_accounts(reference, resource.accounts, tenants, live)
        change = change_for(
            reference,
            resource.version_id,
            resource.identifier,
            resource.accounts,
            after,
            managed,
            propagate=False,
        )
        if change is not None:
            resource_changes.append(change)
    return Plan(changes=tuple(changes), managed=managed, resource_changes=tuple(resource_changes))
