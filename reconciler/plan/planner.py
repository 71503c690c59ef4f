"""The planner: a pure function from (tenants, live state) to a Plan. No I/O here.

Semantics are design section 3 (and 9 for other resources): managed accounts are the tenants'
accounts; every other account is unmanaged and kept in place; authoritative tenants remove
their account from non-members in their scope, additive ones never remove; new accounts are
appended in tenant load order; order-only differences are no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.model import (
    AccountInfo,
    Change,
    LiveResource,
    LiveState,
    Owners,
    Plan,
    Step,
    Tenant,
    account_id,
)
from reconciler.model.interning import shared


def managed_accounts(tenants: Sequence[Tenant], live: LiveState) -> dict[str, AccountInfo]:
    return {live.accounts[t.name]: AccountInfo(t.name, t.membership, t.propagate) for t in tenants}


@dataclass(frozen=True, slots=True)
class Claim:
    """What one tenant says about one resource: is it a member, and may the tenant take its
    account away (authoritative, and the resource is within the tenant's scope)."""

    account: str
    member: bool
    may_remove: bool


def claims(ref: str, tenants: Sequence[Tenant], live: LiveState) -> list[Claim]:
    """Every tenant's claim on `ref`, in load order. The scope is the one difference between
    patients and other resources: a tenant's authority over other resources covers only the
    types its `resources` selectors name (design section 9)."""
    rtype = ref.partition("/")[0]
    out = []
    for tenant in tenants:
        if rtype == "Patient":
            member = ref in live.members[tenant.name]
            in_scope = True
        else:
            member = ref in live.resource_members.get(tenant.name, frozenset())
            in_scope = rtype in tenant.resource_types
        out.append(Claim(live.accounts[tenant.name], member, tenant.authoritative and in_scope))
    return out


def desired_accounts(current: Sequence[str], tenant_claims: Sequence[Claim]) -> list[str]:
    """The live accounts in order, minus each account a tenant may take away from a
    non-member, then each member tenant's account it lacks, appended in load order.

    Accounts compare by id, as Medplum files compartments (model/accounts.py): a non-member's
    alias of the account goes with it; a member that carries an alias already sits in the
    tenant's compartment, so nothing is added (the canonical reference only when missing)."""
    drop = {account_id(c.account) for c in tenant_claims if c.may_remove and not c.member}
    drop.discard(None)
    desired = [a for a in current if account_id(a) not in drop]
    present = {account_id(a) for a in desired}
    for claim in tenant_claims:
        key = account_id(claim.account)
        if claim.member and key not in present:
            desired.append(claim.account)
            present.add(key)
    return desired


def _propagates(owners: Owners[AccountInfo], entry: str) -> bool:
    found = owners.owner(entry)
    return found is not None and found[1].propagate


def steps_for(
    before: Sequence[str],
    after: Sequence[str],
    managed: dict[str, AccountInfo],
    owners: Owners[AccountInfo] | None = None,
) -> tuple[Step, ...]:
    """The `$set-accounts` calls that take `before` to `after`. Medplum propagates the whole
    difference of one call, so mixed propagating/non-propagating changes need two calls."""
    owners = owners or Owners.of(managed)
    add = [a for a in after if a not in before]
    remove = [a for a in before if a not in after]
    changed = add + remove
    propagating = {a for a in changed if _propagates(owners, a)}
    if len(propagating) == len(changed):
        return (Step(tuple(after), True),)
    if not propagating:
        return (Step(tuple(after), False),)
    first = [a for a in before if a not in propagating] + [a for a in add if a in propagating]
    return (Step(tuple(first), True), Step(tuple(after), False))


def change_for(
    live: LiveResource,
    after: Sequence[str],
    managed: dict[str, AccountInfo],
    owners: Owners[AccountInfo] | None = None,
) -> Change | None:
    """The change that takes `live` to `after`; None when they are equal as sets. Medplum
    propagates only from a Patient, so other resources are set in one call without it."""
    before = live.accounts
    if set(before) == set(after):
        return None
    add = tuple(a for a in after if a not in before)
    remove = tuple(a for a in before if a not in after)
    owners = owners or Owners.of(managed)
    tenants = {found[1].tenant for a in add + remove if (found := owners.owner(a)) is not None}
    # Interned: 200,000 changes of a million-patient plan hold a handful of distinct tuples
    # and steps (~350 B a change otherwise).
    steps = steps_for(before, after, managed) if live.is_patient else (Step(tuple(after), False),)
    return Change(
        ref=live.ref,
        version_id=live.version_id,
        identifier=live.identifier,
        before=shared(tuple(before)),
        after=shared(tuple(after)),
        add=shared(add),
        remove=shared(remove),
        tenants=shared(tuple(sorted(tenants))),
        steps=shared(tuple(shared(step) for step in steps)),
    )


def replan(
    live: LiveResource,
    tenants: Sequence[Tenant],
    state: LiveState,
    managed: dict[str, AccountInfo],
    owners: Owners[AccountInfo] | None = None,
) -> Change | None:
    """The change one resource needs, from its (possibly fresh) live accounts."""
    after = desired_accounts(live.accounts, claims(live.ref, tenants, state))
    return change_for(live, after, managed, owners)


def plan(tenants: Sequence[Tenant], live: LiveState) -> Plan:
    managed = managed_accounts(tenants, live)
    owners = Owners.of(managed)
    # Generators, not lists: a million patients in scope, a fifth of them changing.
    changes = (
        replan(live.patients[r], tenants, live, managed, owners) for r in sorted(live.patients)
    )
    others = (
        replan(live.resources[r], tenants, live, managed, owners) for r in sorted(live.resources)
    )
    return Plan(
        changes=tuple(c for c in changes if c is not None),
        managed=managed,
        resource_changes=tuple(c for c in others if c is not None),
    )
