"""The effective-access proof (design section 8): ask the server, as each member
(`X-Medplum-On-Behalf-Of`, admin client), how many patients of each tenant the manifests give it
it sees, and compare with the tenant's live member count; a membership whose entries are all
managed must also see exactly the union of those tenants' patients — no more. Plus the
membership drift itself: managed entries the manifests want and the membership lacks, or holds
and should not."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import HTTPStatusError
from reconciler.model import AccessChange, LiveMembership, LiveState, Tenant
from reconciler.plan.access import AccessRules, access_rules, desired_entries

ON_BEHALF_OF = "X-Medplum-On-Behalf-Of"


@dataclass(frozen=True)
class AccessCheck:
    memberships: int
    tenants: int
    mismatches: list[str]


def _count(client: MedplumClient, compartment: str | None, as_member: str | None) -> int:
    params = [("_summary", "count")]
    if compartment:
        params.append(("_compartment", compartment))
    headers = {ON_BEHALF_OF: as_member} if as_member else None
    body = client.request("GET", "Patient", params=params, headers=headers).body
    return int(body.get("total") or 0) if isinstance(body, dict) else 0


def check_access(
    client: MedplumClient,
    tenants: Sequence[Tenant],
    live: LiveState,
    drift: Sequence[AccessChange],
    *,
    parallelism: int = 10,
) -> AccessCheck:
    rules = access_rules(tenants, live)
    mismatches: list[str] = []
    for change in drift:
        for item in change.grant:
            mismatches.append(
                f"{change.membership}: lacks {item.key.describe()} (tenant {item.tenant})"
            )
        for item in change.revoke:
            mismatches.append(
                f"{change.membership}: holds {item.key.describe()}, which tenant {item.tenant} "
                "does not grant it"
            )
    accounts = sorted(rules.owners)
    with ThreadPoolExecutor(max(1, parallelism), thread_name_prefix="verify-access") as pool:
        totals = dict(zip(accounts, pool.map(lambda a: _count(client, a, None), accounts),
                          strict=True))  # fmt: skip
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
) -> list[str] | None:
    """The mismatches of one membership; None when it holds and wants no managed entry."""
    ref = membership.reference
    live_keys = [rules.key_of(e) for e in membership.entries]
    # What the manifests say it should see: its desired managed entries.
    wanted = [k for k in map(rules.key_of, desired_entries(membership, rules)) if k]
    if not wanted and not any(live_keys):
        return None
    lines: list[str] = []
    for key in wanted:
        try:
            seen = _count(client, key.account, ref)
        except HTTPStatusError as exc:
            return [f"{ref}: could not be checked as the member: {exc.outcome_text}"]
        if seen != totals[key.account]:
            lines.append(
                f"{ref}: sees {seen:,} of tenant {rules.owners[key.account].name}'s "
                f"{totals[key.account]:,} patients"
            )
    # Only when nothing unmanaged can widen it: every live entry is managed.
    if all(live_keys) and not membership.has_access_policy and wanted:
        accounts = sorted({k.account for k in wanted})
        union = _count(client, ",".join(accounts), None)
        seen_all = _count(client, None, ref)
        if seen_all != union:
            names = ", ".join(sorted(rules.owners[a].name for a in accounts))
            lines.append(
                f"{ref}: sees {seen_all:,} patients in all, expected {union:,} (the patients "
                f"of {names})"
            )
    return lines
