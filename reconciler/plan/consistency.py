"""A saved plan is re-derived before it is applied (hardening): every change's `add`,
`remove`, `tenants` and `steps` must follow from its `before`, `after` and the plan's managed
accounts, and a change may only add or remove managed accounts — so what apply prints is what
it writes, whatever someone edited and re-digested. Pure."""

from __future__ import annotations

from reconciler.model import AccessChange, Change, Phase, Plan, Step
from reconciler.plan.entries import entry_summary
from reconciler.plan.planner import steps_for

MAX_SHOWN = 5


def _change_problems(plan: Plan, change: Change) -> list[str]:
    problems: list[str] = []
    add = tuple(a for a in change.after if a not in change.before)
    remove = tuple(a for a in change.before if a not in change.after)
    if change.add != add or change.remove != remove:
        problems.append("add/remove do not follow from before/after")
    foreign = [a for a in (*add, *remove) if a not in plan.managed]
    if foreign:
        problems.append(f"it would change unmanaged accounts ({', '.join(foreign)})")
        return problems
    tenants = tuple(sorted({plan.managed[a].tenant for a in (*add, *remove)}))
    if change.tenants != tenants:
        problems.append("its tenants do not follow from its accounts")
    steps = (
        steps_for(change.before, change.after, plan.managed)
        if change.is_patient
        else (Step(tuple(change.after), False),)
    )
    if change.steps != steps:
        problems.append("its steps are not the ones its accounts need")
    return problems


def _access_problems(plan: Plan, change: AccessChange) -> list[str]:
    problems: list[str] = []
    managed = {k.describe() for k in plan.managed_access}
    revoked = [e for e in change.before if e not in change.after]
    granted = [e for e in change.after if e not in change.before]
    if any(entry_summary(e) not in managed for e in (*revoked, *granted)):
        problems.append("it would change unmanaged access entries")
    if sorted(i.key.describe() for i in change.grant) != sorted(map(entry_summary, granted)):
        problems.append("its grants do not follow from before/after")
    if sorted(i.key.describe() for i in change.revoke) != sorted(map(entry_summary, revoked)):
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
