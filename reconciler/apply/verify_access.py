"""The effective-access proof (design section 8): ask the server, as each member
(`X-Medplum-On-Behalf-Of`, admin client), how many patients of each tenant the manifests give it
it sees, and compare with the tenant's live member count; a membership whose entries are all
managed must also see exactly the union of those tenants' patients — no more. Plus the
membership drift itself: managed entries the manifests want and the membership lacks, or holds
and should not. The results are data (Mismatch records); views word them."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import HTTPStatusError
from reconciler.model import AccessChange, AccessKey, LiveMembership, LiveState, Tenant
from reconciler.plan.access import AccessRules, access_rules, desired_entries


@dataclass(frozen=True)
class EntryDrift:
    """A managed entry the membership lacks (`missing`) or holds though no tenant grants it."""

    membership: str
    key: AccessKey
    tenant: str
    missing: bool


@dataclass(frozen=True)
class SeenCount:
    """What the member sees, counted on its behalf, differs from what the manifests give it:
    one tenant's patients (`tenant`), or in all (`tenant` None, `tenants` the union's)."""

    membership: str
    resource_type: str
    seen: int
    expected: int
    tenant: str | None = None
    tenants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unchecked:
    membership: str
    reason: str


Mismatch = EntryDrift | SeenCount | Unchecked


@dataclass(frozen=True)
class AccessCheck:
    memberships: int  # checked
    tenants: int  # whose accounts some checked entry names
    mismatches: list[Mismatch]


def drift_of(changes: Sequence[AccessChange]) -> list[Mismatch]:
    found: list[Mismatch] = []
    for change in changes:
        found += [EntryDrift(change.membership, i.key, i.tenant, True) for i in change.grant]
        found += [EntryDrift(change.membership, i.key, i.tenant, False) for i in change.revoke]
    return found


def check_access(
    client: MedplumClient,
    tenants: Sequence[Tenant],
    live: LiveState,
    drift: Sequence[AccessChange],
    *,
    parallelism: int = 10,
) -> AccessCheck:
    rules = access_rules(tenants, live)
    mismatches = drift_of(drift)
    accounts = sorted(rules.owners)
    with ThreadPoolExecutor(max(1, parallelism), thread_name_prefix="verify-access") as pool:
        counts = pool.map(lambda a: client.count("Patient", [("_compartment", a)]), accounts)
        totals = dict(zip(accounts, counts, strict=True))
        results = pool.map(
            lambda ref: _check_one(client, rules, live.memberships[ref], totals),
            sorted(live.memberships),
        )
        checked = 0
        for lines in results:
            if lines is None:
                continue
            checked += 1
            mismatches += lines
    used = {k.account for m in live.memberships.values() for k in map(rules.key_of, m.entries) if k}
    used |= {k.account for keys in rules.declared.values() for k in keys}
    return AccessCheck(checked, len(used), mismatches)


def _check_one(
    client: MedplumClient, rules: AccessRules, membership: LiveMembership, totals: dict[str, int]
) -> list[Mismatch] | None:
    """The mismatches of one membership; None when it holds and wants no managed entry."""
    ref = membership.reference
    live_keys = [rules.key_of(e) for e in membership.entries]
    # What the manifests say it should see: its desired managed entries.
    wanted = [k for k in map(rules.key_of, desired_entries(membership, rules)) if k]
    if not wanted and not any(live_keys):
        return None
    found: list[Mismatch] = []
    for key in wanted:
        try:
            seen = client.count("Patient", [("_compartment", key.account)], on_behalf_of=ref)
        except HTTPStatusError as exc:
            return [Unchecked(ref, exc.outcome_text)]
        if seen != totals[key.account]:
            name = rules.owners[key.account].name
            found.append(SeenCount(ref, "Patient", seen, totals[key.account], tenant=name))
    # Only when nothing unmanaged can widen it: every live entry is managed.
    if all(live_keys) and not membership.has_access_policy and wanted:
        accounts = sorted({k.account for k in wanted})
        union = client.count("Patient", [("_compartment", ",".join(accounts))])
        seen_all = client.count("Patient", on_behalf_of=ref)
        if seen_all != union:
            names = tuple(sorted(rules.owners[a].name for a in accounts))
            found.append(SeenCount(ref, "Patient", seen_all, union, tenants=names))
    return found
