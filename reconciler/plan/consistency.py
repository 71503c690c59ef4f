"""A saved plan is re-derived before it is applied (hardening): every change's `add`,
`remove`, `tenants` and `steps` must follow from its `before`, `after` and the plan's managed
accounts, a change may only add a managed account (in its canonical form) or remove one (in
any form: an alias is that account, model/accounts.py), and every access entry it writes must
be exactly the canonical entry of a grant it shows — so what apply prints is what it writes,
whatever someone edited and re-digested. Pure."""

from __future__ import annotations

from reconciler.model import AccessChange, Change, Phase, Plan, Step
from reconciler.plan.entries import canonical_json, managed_entry
from reconciler.plan.planner import steps_for

MAX_SHOWN = 5


def _change_problems(plan: Plan, change: Change) -> list[str]:
    problems: list[str] = []
    add = tuple(a for a in change.after if a not in change.before)
    remove = tuple(a for a in change.before if a not in change.after)
    if change.add != add or change.remove != remove:
        problems.append("add/remove do not follow from before/after")
    owners = plan.owners
    foreign = [a for a in (*add, *remove) if owners.owner(a) is None]
    if foreign:
        problems.append(f"it would change unmanaged accounts ({', '.join(foreign)})")
        return problems
    aliases = [a for a in add if owners.is_alias(a)]
    if aliases:
        problems.append(
            f"it would add accounts in another form than their own ({', '.join(aliases)})"
        )
    tenants = tuple(sorted({found[1].tenant for a in (*add, *remove)
                            if (found := owners.owner(a)) is not None}))  # fmt: skip
    if change.tenants != tenants:
        problems.append("its tenants do not follow from its accounts")
    steps = (
        steps_for(change.before, change.after, plan.managed, owners)
        if change.is_patient
        else (Step(tuple(change.after), False),)
    )
    if change.steps != steps:
        problems.append("its steps are not the ones its accounts need")
    return problems


def _access_problems(plan: Plan, change: AccessChange) -> list[str]:
    problems: list[str] = []
    names = frozenset((k.policy, k.parameter) for k in plan.managed_access)
    revoked = [e for e in change.before if e not in change.after]
    granted = [e for e in change.after if e not in change.before]
    found = {e: managed_entry(e, names, plan.owners) for e in (*revoked, *granted)}
    if any(found[e] is None for e in (*revoked, *granted)):
        problems.append("it would change unmanaged access entries")
    if any(canonical_json(m.key) != e for e in granted if (m := found[e]) is not None):
        problems.append("an entry it writes is not the canonical entry of its grant")
    keys = {e: m.key.describe() for e, m in found.items() if m is not None}
    if sorted(i.key.describe() for i in change.grant) != sorted(keys.get(e, e) for e in granted):
        problems.append("its grants do not follow from before/after")
    if sorted(i.key.describe() for i in change.revoke) != sorted(keys.get(e, e) for e in revoked):
        problems.append("its revocations do not follow from before/after")
    if not change.steps or change.steps[-1].access != change.after:
        problems.append("its last step does not write its after list")
    elif len(change.steps) == 2 and (
        change.steps[0].access != tuple(e for e in change.before if e not in revoked)
        or change.steps[0].phase is not Phase.REVOKE
    ):
        problems.append("its first step is not the revocation")
    return problems


def inconsistencies(plan: Plan) -> list[str]:
    problems: list[str] = []
    for change in plan.changes:
        if not change.is_patient:
            problems.append(f"{change.ref}: not a Patient, listed among the patients")
        problems += [f"{change.ref}: {p}" for p in _change_problems(plan, change)]
    for change in plan.resource_changes:
        if change.is_patient:
            problems.append(f"{change.ref}: a Patient, listed among the other resources")
        problems += [f"{change.ref}: {p}" for p in _change_problems(plan, change)]
    for access in plan.access_changes:
        problems += [f"{access.membership}: {p}" for p in _access_problems(plan, access)]
    return problems
