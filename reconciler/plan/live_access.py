"""Live read for tenant access (design section 8): the memberships the grants name and the
memberships already holding managed entries, in batches — never one request per member."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import HTTPStatusError
from reconciler.medplum.reads import PAGE_SIZE, chunks
from reconciler.model import LiveMembership, MemberKind, MemberSelector, Tenant, entry_json

MEMBERSHIP = "ProjectMembership"


def to_live_membership(resource: dict[str, Any]) -> LiveMembership:
    raw = resource.get("profile")
    profile: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return LiveMembership(
        reference=f"{MEMBERSHIP}/{resource['id']}",
        version_id=str((resource.get("meta") or {}).get("versionId", "")),
        entries=tuple(entry_json(e) for e in resource.get("access") or [] if isinstance(e, dict)),
        has_access_policy=isinstance(resource.get("accessPolicy"), dict),
        admin=resource.get("admin") is True,
        profile=profile.get("reference") if isinstance(profile.get("reference"), str) else None,
        display=profile.get("display") if isinstance(profile.get("display"), str) else None,
    )


def read_memberships(client: MedplumClient, refs: Sequence[str]) -> dict[str, LiveMembership]:
    """Fresh versions and entries of these memberships (batched); deleted ones are absent."""
    ids = [ref.split("/", 1)[1] for ref in refs]
    return {m.reference: m for m in map(to_live_membership, client.iter_many(MEMBERSHIP, ids))}


def _policy_problems(client: MedplumClient, tenants: Sequence[Tenant]) -> list[str]:
    """Every policy must exist and mention `%NAME`: one that never does grants the same
    whatever the tenant, so it would not restrict anyone to their tenant."""
    wanted = {g.policy for t in tenants for g in t.access}
    if not wanted:
        return []
    found = {
        f"AccessPolicy/{p['id']}": json.dumps(p)
        for p in client.read_many("AccessPolicy", [w.split("/", 1)[1] for w in sorted(wanted)])
    }
    problems: list[str] = []
    for tenant in tenants:
        for i, grant in enumerate(tenant.access):
            text = found.get(grant.policy)
            where = f"{grant.location}: error: spec.access[{i}].policy"
            if text is None:
                problems.append(f"{where}: {grant.policy} does not exist (tenant {tenant.name!r})")
            elif f"%{grant.parameter}" not in text:
                problems.append(
                    f"{where}: {grant.policy} never mentions %{grant.parameter}, so it would "
                    f"grant the same whatever the tenant (tenant {tenant.name!r})"
                )
    return problems


def read_access(
    client: MedplumClient,
    tenants: Sequence[Tenant],
    accounts: dict[str, str],
) -> tuple[dict[str, LiveMembership], dict[tuple[str, int], frozenset[str]], list[str]]:
    """(memberships in scope, members of each grant, problems)."""
    problems = _policy_problems(client, tenants)
    memberships: dict[str, LiveMembership] = {}
    grant_members: dict[tuple[str, int], set[str]] = {}
    selectors = [
        (tenant, index, member)
        for tenant in tenants
        for index, grant in enumerate(tenant.access)
        for member in grant.members
    ]
    for tenant in tenants:
        for index in range(len(tenant.access)):
            grant_members[(tenant.name, index)] = set()

    def keep(resource: dict[str, Any]) -> str:
        live = to_live_membership(resource)
        memberships[live.reference] = live
        return live.reference

    def where(tenant: Tenant, member: MemberSelector) -> str:
        return f"{member.location}: error: member {member.describe()}"

    # By id: one batched read.
    ids = [m.value.split("/", 1)[1] for _, _, m in selectors if m.kind is MemberKind.ID]
    found = {r["id"]: keep(r) for r in client.read_many(MEMBERSHIP, ids)} if ids else {}
    # By profile: comma lists, each must match exactly one membership.
    profiles = [m.value for _, _, m in selectors if m.kind is MemberKind.PROFILE]
    by_profile: dict[str, list[str]] = {p: [] for p in profiles}
    for chunk in chunks(list(dict.fromkeys(profiles)), PAGE_SIZE):
        form = {"profile": ",".join(chunk), "_count": str(PAGE_SIZE)}
        for resource in client.post_search(MEMBERSHIP, form):
            ref = (resource.get("profile") or {}).get("reference")
            if ref in by_profile:
                by_profile[ref].append(keep(resource))
    # By identifier: exactly one.
    tokens = [m.value for _, _, m in selectors if m.kind is MemberKind.IDENTIFIER]
    by_token = client.search_by_identifiers(MEMBERSHIP, tokens) if tokens else {}
    for tenant, index, member in selectors:
        hits: list[str]
        if member.kind is MemberKind.ID:
            ref = found.get(member.value.split("/", 1)[1])
            if ref is None:
                problems.append(f"{where(tenant, member)} does not exist (tenant {tenant.name!r})")
                continue
            hits = [ref]
        elif member.kind is MemberKind.PROFILE:
            hits = by_profile.get(member.value, [])
        elif member.kind is MemberKind.IDENTIFIER:
            hits = [keep(r) for r in by_token.get(member.value, [])]
        else:
            try:
                query = parse_qsl(member.value, keep_blank_values=True)
                hits = [keep(r) for r in client.search_all(MEMBERSHIP, query)]
            except HTTPStatusError as exc:
                if exc.status != 400:
                    raise
                problems.append(
                    f"{where(tenant, member)} was rejected by the server: {exc.outcome_text} "
                    f"(tenant {tenant.name!r})"
                )
                continue
            if not hits:
                problems.append(
                    f"{where(tenant, member)} matches no memberships (tenant {tenant.name!r})"
                )
                continue
        if member.kind in (MemberKind.PROFILE, MemberKind.IDENTIFIER) and len(hits) != 1:
            problems.append(
                f"{where(tenant, member)} matches {len(hits)} memberships, expected exactly 1 "
                f"(tenant {tenant.name!r})"
            )
            continue
        grant_members[(tenant.name, index)].update(hits)
    # Scope: memberships holding an entry under a granted policy may lose it (authoritative).
    if any(t.authoritative and t.access for t in tenants):
        for policy in sorted({g.policy for t in tenants if t.authoritative for g in t.access}):
            for resource in client.search_all(MEMBERSHIP, [("access-policy", policy)]):
                keep(resource)
    del accounts  # resolved accounts are matched by the planner, not here
    return memberships, {k: frozenset(v) for k, v in grant_members.items()}, problems
