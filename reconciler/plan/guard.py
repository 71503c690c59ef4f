"""The guards (pure). Removing a tenant's account revokes access, so a plan that strips a large
share of a tenant's current members — a mistyped `search:` selector, say — is flagged; `plan`
warns and `apply` refuses unless --allow-mass-removal. Granting is the direction of a breach,
so the mirror holds for additions (--allow-mass-grant), and for memberships granted access."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial

from reconciler.errors import ApplyRefused
from reconciler.model import LiveState, MassGrant, MassRemoval, Plan, Tenant, carries
from reconciler.plan.access import MASS_GRANT_MEMBERSHIPS

SHARE = 0.5
MIN_PATIENTS = 10


def _per_tenant(plan: Plan, adding: bool, resources: bool = False) -> Counter[str]:
    counts: Counter[str] = Counter()
    for change in plan.resource_changes if resources else plan.changes:
        for account in change.add if adding else change.remove:
            found = plan.owners.owner(account)  # an alias removed counts for its tenant
            if found is not None:
                counts[found[1].tenant] += 1
    return counts


def _members(live: LiveState, account: str, resources: bool = False) -> int:
    population = live.resources if resources else live.patients
    return sum(1 for p in population.values() if carries(p.accounts, account))


# (resources?, the word for what a tenant gains, the word for what it loses)
KINDS = ((False, "patients", "members"), (True, "other resources", "other resources"))


def _flagged(
    plan: Plan, accounts: dict[str, str], members: Callable[[str, bool], int], *, adding: bool
) -> list[tuple[str, int, int, str]]:
    """(tenant, count, current members, word) where a plan adds (or removes) a tenant's
    account to more than 10 and to more than 50 % of its current members: the one rule of
    both guards, for patients and for other resources."""
    found = []
    for resources, gained, lost in KINDS:
        counts = _per_tenant(plan, adding=adding, resources=resources)
        for tenant, account in accounts.items():
            current = members(account, resources)
            count = counts.get(tenant, 0)
            if count > MIN_PATIENTS and count > SHARE * current:
                found.append((tenant, count, current, gained if adding else lost))
    return found


def mass_grants(plan: Plan, tenants: Sequence[Tenant], live: LiveState) -> list[MassGrant]:
    accounts = {t.name: live.accounts[t.name] for t in tenants}
    members = partial(_members, live)
    return [MassGrant(*row) for row in _flagged(plan, accounts, members, adding=True)]


def mass_removals(plan: Plan, tenants: Sequence[Tenant], live: LiveState) -> list[MassRemoval]:
    accounts = {t.name: live.accounts[t.name] for t in tenants}
    members = partial(_members, live)
    return [MassRemoval(*row) for row in _flagged(plan, accounts, members, adding=False)]


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


def refuse_unguarded(
    plan: Plan,
    *,
    allow_mass_removal: bool,
    max_removals: int | None,
    allow_mass_grant: bool,
    max_grants: int | None,
) -> None:
    """Raise ApplyRefused when a guard trips and the flag that lets it through is absent."""
    problems = removal_problems(
        plan, plan.mass_removals, allow_mass_removal=allow_mass_removal, max_removals=max_removals
    )
    if problems:
        raise ApplyRefused(
            "refusing to apply: "
            + "; ".join(problems)
            + " (review the plan; --allow-mass-removal to proceed); nothing was changed"
        )
    problems = grant_problems(plan, allow_mass_grant=allow_mass_grant, max_grants=max_grants)
    if problems:
        raise ApplyRefused(
            "refusing to apply: "
            + "; ".join(problems)
            + " (review the plan; --allow-mass-grant to proceed); nothing was changed"
        )


def guards_from_counts(
    plan: Plan, members: dict[tuple[str, bool], int]
) -> tuple[tuple[MassRemoval, ...], tuple[MassGrant, ...]]:
    """The removal and grant guards of a saved plan, recomputed from what it will really write
    and the tenants' current member counts (`members[(account, resources)]`), never from the
    guard fields stored in the file."""
    accounts = dict(sorted((info.tenant, ref) for ref, info in plan.managed.items()))

    def count(account: str, resources: bool) -> int:
        return members.get((account, resources), 0)

    removals = tuple(MassRemoval(*r) for r in _flagged(plan, accounts, count, adding=False))
    grants = tuple(MassGrant(*r) for r in _flagged(plan, accounts, count, adding=True))
    return removals, grants


def repair_problems(
    added: Mapping[str, int],
    removed: Mapping[str, int],
    carrying: Mapping[str, int],
    memberships_granted: int,
    *,
    allow_mass_grant: bool,
    allow_mass_removal: bool,
) -> list[str]:
    """The guards of `verify --repair`, per tenant: adding its account to (or taking it from)
    more than 10 resources and more than half of what carries it today; granting access to
    more than 10 memberships. `added`/`removed`/`carrying`: tenant name -> resources."""
    problems = []
    for tenant in sorted(set(added) | set(removed)):
        current = carrying.get(tenant, 0)
        count = added.get(tenant, 0)
        if not allow_mass_grant and count > MIN_PATIENTS and count > SHARE * current:
            problems.append(
                f"the repair would add tenant {tenant!r}'s account to {count:,} resources, over "
                f"the {current:,} that carry it now (--allow-mass-grant to proceed)"
            )
        count = removed.get(tenant, 0)
        if not allow_mass_removal and count > MIN_PATIENTS and count > SHARE * current:
            problems.append(
                f"the repair would take tenant {tenant!r}'s account from {count:,} of the "
                f"{current:,} resources that carry it (--allow-mass-removal to proceed)"
            )
    if not allow_mass_grant and memberships_granted > MASS_GRANT_MEMBERSHIPS:
        problems.append(
            f"the repair grants access to {memberships_granted:,} memberships (more than "
            f"{MASS_GRANT_MEMBERSHIPS}; --allow-mass-grant to proceed)"
        )
    return problems
