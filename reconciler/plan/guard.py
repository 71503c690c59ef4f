"""The guards (pure). Removing a tenant's account revokes access, so a plan that strips a large
share of a tenant's current members — a mistyped `search:` selector, say — is flagged; `plan`
warns and `apply` refuses unless --allow-mass-removal. Granting is the direction of a breach,
so the mirror holds for additions (--allow-mass-grant), and for memberships granted access."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from reconciler.model import LiveState, MassGrant, MassRemoval, Plan, Tenant
from reconciler.plan.access import MASS_GRANT_MEMBERSHIPS

SHARE = 0.5
MIN_PATIENTS = 10


def _per_tenant(plan: Plan, adding: bool, resources: bool = False) -> Counter[str]:
    counts: Counter[str] = Counter()
    for change in plan.resource_changes if resources else plan.changes:
        for account in change.add if adding else change.remove:
            info = plan.managed.get(account)
            if info is not None:
                counts[info.tenant] += 1
    return counts


def _members(live: LiveState, account: str, resources: bool = False) -> int:
    population = live.resources if resources else live.patients
    return sum(1 for p in population.values() if account in p.accounts)


def mass_grants(plan: Plan, tenants: Sequence[Tenant], live: LiveState) -> list[MassGrant]:
    """Tenants whose account the plan adds to more than 10 patients and to more than 50 %
    more patients than the tenant has today."""
    found = []
    for resources, what in ((False, "patients"), (True, "other resources")):
        added = _per_tenant(plan, adding=True, resources=resources)
        for tenant in tenants:
            members = _members(live, live.accounts[tenant.name], resources)
            count = added.get(tenant.name, 0)
            if count > MIN_PATIENTS and count > SHARE * members:
                found.append(MassGrant(tenant.name, count, members, what))
    return found


def mass_removals(plan: Plan, tenants: Sequence[Tenant], live: LiveState) -> list[MassRemoval]:
    found = []
    for resources, what in ((False, "members"), (True, "other resources")):
        removed = _per_tenant(plan, adding=False, resources=resources)
        for tenant in tenants:
            members = _members(live, live.accounts[tenant.name], resources)
            count = removed.get(tenant.name, 0)
            if count > MIN_PATIENTS and count > SHARE * members:
                found.append(MassRemoval(tenant.name, count, members, what))
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
    if not allow_mass_grant:
        problems += [m.describe() for m in plan.mass_grants]
    granted = sum(1 for c in plan.access_changes if c.grant)
    if granted > MASS_GRANT_MEMBERSHIPS and not allow_mass_grant:
        problems.append(
            f"the plan grants access to {granted:,} memberships (more than "
            f"{MASS_GRANT_MEMBERSHIPS})"
        )
    total = plan.added + plan.grants
    if max_grants is not None and total > max_grants:
        problems.append(
            f"the plan grants {total:,} (accounts added and access entries), more than "
            f"--max-grants {max_grants:,}"
        )
    return problems


def guards_from_counts(
    plan: Plan, members: dict[tuple[str, bool], int]
) -> tuple[tuple[MassRemoval, ...], tuple[MassGrant, ...]]:
    """The removal and grant guards of a saved plan, recomputed from what it will really write
    and the tenants' current member counts (`members[(account, resources)]`), never from the
    guard fields stored in the file."""
    accounts = {info.tenant: ref for ref, info in plan.managed.items()}
    removals: list[MassRemoval] = []
    grants: list[MassGrant] = []
    kinds = ((False, "members", "patients"), (True, "other resources", "other resources"))
    for resources, member_word, grant_word in kinds:
        removed = _per_tenant(plan, adding=False, resources=resources)
        added = _per_tenant(plan, adding=True, resources=resources)
        for tenant, account in sorted(accounts.items()):
            count = members.get((account, resources), 0)
            if removed[tenant] > MIN_PATIENTS and removed[tenant] > SHARE * count:
                removals.append(MassRemoval(tenant, removed[tenant], count, member_word))
            if added[tenant] > MIN_PATIENTS and added[tenant] > SHARE * count:
                grants.append(MassGrant(tenant, added[tenant], count, grant_word))
    return tuple(removals), tuple(grants)
