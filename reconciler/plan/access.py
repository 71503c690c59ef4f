"""The access planner: pure, like planner.py, for `ProjectMembership.access` (design section 8).

- Managed entries: an entry whose policy some tenant grants through, with that grant's
  parameter referencing a managed account. Everything else on a membership is kept in place.
- Desired entries: the live entries in order, minus each managed entry an authoritative tenant
  does not declare for the member (additive tenants never remove), then each declared entry the
  member lacks, in tenant load order. Order alone is no change.
- Never write fail-open: a membership left with no entry and no `accessPolicy` would see
  everything (Medplum's legacy default), so such a plan is refused.
- Order: revocations are written before any account changes and grants after them. A member
  that loses one tenant and gains another is written twice — unless the revocation alone would
  leave it with no entry (fail-open for a moment): then its final list is written once, in the
  revocation phase, which never exposes more than its current plus desired grants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from reconciler.model import (
    AccessChange,
    AccessItem,
    AccessKey,
    AccessStep,
    LiveMembership,
    LiveState,
    Owners,
    Phase,
    Tenant,
    entry_json,
)
from reconciler.plan.entries import ManagedEntry, entry_summary, managed_entry, unsafe_parameters

MASS_GRANT_MEMBERSHIPS = 10


@dataclass
class AccessPlan:
    changes: list[AccessChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # non-empty: the plan is refused
    managed: tuple[AccessKey, ...] = ()


@dataclass(frozen=True)
class AccessRules:
    """What the manifests say about access, with accounts resolved: the input of the planner."""

    owners: dict[str, Tenant]  # managed account -> its tenant
    names: frozenset[tuple[str, str]]  # (policy, parameter) pairs some tenant grants through
    declared: dict[str, list[AccessKey]]  # membership -> declared keys, in tenant load order
    by_id: Owners[Tenant]  # the same accounts by id: an entry grants by its parameter's value

    def managed(self, entry_text: str) -> ManagedEntry | None:
        """What a live entry is as far as the manifests go: a managed grant (in any form that
        names a managed account), or None (unmanaged)."""
        return managed_entry(entry_text, self.names, self.by_id)

    def key_of(self, entry_text: str) -> AccessKey | None:
        """The managed key of a live entry, or None when the entry is not managed."""
        found = self.managed(entry_text)
        return found.key if found is not None else None

    def item(self, key: AccessKey) -> AccessItem:
        return AccessItem(key.policy, key.parameter, key.account, self.owners[key.account].name)


def access_rules(tenants: Sequence[Tenant], live: LiveState) -> AccessRules:
    owners = {live.accounts[t.name]: t for t in tenants}
    names = frozenset((g.policy, g.parameter) for t in tenants for g in t.access)
    declared: dict[str, list[AccessKey]] = {}
    for tenant in tenants:
        account = live.accounts[tenant.name]
        for index, grant in enumerate(tenant.access):
            key = AccessKey(grant.policy, grant.parameter, account)
            for ref in sorted(live.grant_members.get((tenant.name, index), frozenset())):
                keys = declared.setdefault(ref, [])
                if key not in keys:
                    keys.append(key)
    return AccessRules(owners, names, declared, Owners.of(owners))


def desired_entries(membership: LiveMembership, rules: AccessRules) -> tuple[str, ...]:
    """Live entries in order, minus each managed one (in whatever form) an authoritative tenant
    does not declare for this member; then the canonical entry of each declared grant that no
    kept entry already grants (a `_history` form names the tenant but grants nothing)."""
    declared = rules.declared.get(membership.reference, [])
    kept: list[str] = []
    present: set[AccessKey] = set()
    for entry in membership.entries:
        found = rules.managed(entry)
        if found is not None:
            if rules.owners[found.key.account].authoritative and found.key not in declared:
                continue  # an authoritative tenant does not declare it for this member: revoke
            if found.grants:
                present.add(found.key)
        kept.append(entry)
    for key in declared:
        if key not in present:
            kept.append(entry_json(key.entry()))
            present.add(key)
    return tuple(kept)


def change_for(
    membership: LiveMembership, after: Sequence[str], rules: AccessRules
) -> AccessChange | None:
    before = membership.entries
    if set(before) == set(after):
        return None
    revoked = [e for e in before if e not in after]
    granted = [e for e in after if e not in before]

    def items(entries: list[str]) -> tuple[AccessItem, ...]:
        keys = [rules.key_of(e) for e in entries]
        return tuple(rules.item(k) for k in keys if k is not None)

    steps: tuple[AccessStep, ...]
    if revoked and granted:
        first = tuple(e for e in before if e not in revoked)
        if not first and not membership.has_access_policy:
            steps = (AccessStep(tuple(after), Phase.REVOKE),)  # never empty, even for a moment
        else:
            steps = (AccessStep(first, Phase.REVOKE), AccessStep(tuple(after), Phase.GRANT))
    else:
        steps = (AccessStep(tuple(after), Phase.REVOKE if revoked else Phase.GRANT),)
    return AccessChange(
        membership=membership.reference,
        version_id=membership.version_id,
        profile=membership.profile,
        display=membership.display,
        before=tuple(before),
        after=tuple(after),
        grant=items(granted),
        revoke=items(revoked),
        steps=steps,
    )


def plan_access(tenants: Sequence[Tenant], live: LiveState) -> AccessPlan:
    rules = access_rules(tenants, live)
    result = AccessPlan(
        managed=tuple(sorted(AccessKey(p, n, a) for (p, n) in rules.names for a in rules.owners))
    )
    for ref in sorted(live.memberships):
        membership = live.memberships[ref]
        after = desired_entries(membership, rules)
        change = change_for(membership, after, rules)
        unsafe = [(e, names) for e in after if (names := unsafe_parameters(e))]
        if change is None:
            result.warnings += [_unsafe_line(ref, e, n, "check it by hand") for e, n in unsafe]
            continue
        if unsafe:
            result.problems += [
                "Error: " + _unsafe_line(ref, e, n, "it is never written: fix it by hand first")
                for e, n in unsafe
            ]
            continue
        if not after and not membership.has_access_policy:
            result.problems.append(
                f"Error: {ref} would be left with no access policy, which Medplum treats as "
                "unrestricted access"
            )
            continue
        if membership.unrestricted:
            result.warnings.append(
                f"{ref} has no access policy today, so it sees everything; this plan narrows it "
                f"to {_tenants(change.grant)}"
            )
        if membership.admin:
            result.warnings.append(
                f"{ref} is a project admin: besides its tenants, it can read and change every "
                "membership and access policy"
            )
        result.changes.append(change)
    granted = [c for c in result.changes if c.grant]
    if len(granted) > MASS_GRANT_MEMBERSHIPS:
        result.warnings.append(
            f"the plan grants access to {len(granted):,} memberships (more than "
            f"{MASS_GRANT_MEMBERSHIPS}); apply will refuse without --allow-mass-grant"
        )
    return result


def _unsafe_line(ref: str, entry: str, names: list[str], then: str) -> str:
    return (
        f"{ref}: access entry {entry_summary(entry)} has a parameter ({', '.join(names)}) "
        'holding " or \\, which Medplum pastes into the policy unescaped (the member can no '
        f"longer sign in, or the policy is rewritten); {then}"
    )


def _tenants(items: Sequence[AccessItem]) -> str:
    names = sorted({i.tenant for i in items})
    return ", ".join(f"tenant {n}" for n in names) if names else "its remaining entries"
