"""The removal guard (pure): removing a tenant's account revokes access, so a plan that strips
a large share of a tenant's current members — a mistyped `search:` selector, say — is flagged;
`plan` warns and `apply` refuses unless --allow-mass-removal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from reconciler.model import LiveState, MassRemoval, Plan, Tenant
from reconciler.plan.access import MASS_GRANT_MEMBERSHIPS

SHARE = 0.5
MIN_PATIENTS = 10


def mass_removals(plan: Plan, tenants: Sequence[Tenant], live: LiveState) -> list[MassRemoval]:
    removed: Counter[str] = Counter()
    for change in plan.changes:
        for account in change.remove:
            info = plan.managed.get(account)
            if info is not None:
                removed[info.tenant] += 1
    found = []
    for tenant in tenants:
        account = live.accounts[tenant.name]
        members = sum(1 for p in live.patients.values() if account in p.accounts)
        count = removed.get(tenant.name, 0)
        if count > MIN_PATIENTS and count > SHARE * members:
            found.append(MassRemoval(tenant.name, count, members))
    return found


def removal_problems(
    plan: Plan,
    mass: Sequence[MassRemoval],
    *,
    allow_mass_removal: bool,
    max_removals: int | None,
) -> list[str]:
    problems = []
    if mass and not allow_mass_removal:
        problems += [m.describe() for m in mass]
    if max_removals is not None and plan.removed > max_removals:
        problems.append(
            f"the plan removes {plan.removed:,} accounts, more than --max-removals {max_removals:,}"
        )
    return problems


def grant_problems(plan: Plan, *, allow_mass_grant: bool, max_grants: int | None) -> list[str]:
    """The grant guard (design section 8): granting is the direction of a breach."""
    problems = []
    granted = sum(1 for c in plan.access_changes if c.grant)
    if granted > MASS_GRANT_MEMBERSHIPS and not allow_mass_grant:
        problems.append(
            f"the plan grants access to {granted:,} memberships (more than "
            f"{MASS_GRANT_MEMBERSHIPS})"
        )
    if max_grants is not None and plan.grants > max_grants:
        problems.append(
            f"the plan adds {plan.grants:,} grants, more than --max-grants {max_grants:,}"
        )
    return problems
