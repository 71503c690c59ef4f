"""The effective-access proof (design sections 8 and 11): ask the server, as each member
(`X-Medplum-On-Behalf-Of`, admin client), how much of every tenant it sees — every resource
type its policies restrict to a compartment, per tenant and in all — and compare with what the
manifests give it: its tenants' data, through the managed policy's types, and nothing else.

Both directions are proven. What a member sees beyond the manifests — through an unmanaged
entry, a managed entry no tenant grants it, its legacy `accessPolicy` — is a line naming the
entry; so are a missing policy (Medplum lets it see everything), a `*` rule and `admin: true`.
The counts go in one `batch` Bundle per member (`client.count_many`). Results are records;
views word them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import MedplumError
from reconciler.model import AccessChange, AccessKey, LiveMembership, LiveState, Tenant
from reconciler.plan.access import AccessRules, access_rules, desired_entries
from reconciler.plan.entries import parse_entry
from reconciler.plan.policy import NO_PATIENT_DATA, is_tenant_value

ADMIN_TYPES = frozenset({"Project", "ProjectMembership", "User", "UserSecurityRequest"})


@dataclass(frozen=True)
class EntryDrift:
    """A managed entry the membership lacks (`missing`) or holds though no tenant grants it."""

    membership: str
    key: AccessKey
    tenant: str
    missing: bool


@dataclass(frozen=True)
class SeenCount:
    """What the member sees of one type, counted on its behalf, against what the manifests
    give it: of one tenant (`tenant`), or in all (`tenant` None; `tenants`, the ones it is
    given). `via`: the entries that let it see more, when it sees more."""

    membership: str
    resource_type: str
    seen: int
    expected: int
    tenant: str | None = None
    tenants: tuple[str, ...] = ()
    via: str = ""


@dataclass(frozen=True)
class Unrestricted:
    """The member sees every resource in the project, or may change who sees what."""

    membership: str
    why: str  # "no access policy", "a * rule of …", "project admin"


@dataclass(frozen=True)
class Unchecked:
    membership: str
    reason: str


Mismatch = EntryDrift | SeenCount | Unrestricted | Unchecked


@dataclass(frozen=True)
class AccessCheck:
    memberships: int  # checked
    tenants: int  # whose accounts some checked entry names
    mismatches: list[Mismatch]
    types: tuple[str, ...] = ()  # the resource types counted


def drift_of(changes: Sequence[AccessChange]) -> list[Mismatch]:
    found: list[Mismatch] = []
    for change in changes:
        found += [EntryDrift(change.membership, i.key, i.tenant, True) for i in change.grant]
        found += [EntryDrift(change.membership, i.key, i.tenant, False) for i in change.revoke]
    return found


@dataclass
class MemberAccess:
    """One membership as the proof sees it: what the manifests give it, what its entries are."""

    live: LiveMembership
    given: dict[str, frozenset[str]] = field(default_factory=dict)  # account -> managed types
    plain: dict[str, frozenset[str]] = field(default_factory=dict)  # … restricted by it alone
    types: set[str] = field(default_factory=set)  # types any of its policies restrict
    unmanaged: list[str] = field(default_factory=list)  # how unmanaged entries are named
    undeclared: dict[str, str] = field(default_factory=dict)  # account -> managed entry held
    star: str = ""  # an entry whose policy has a `*` rule


def _rules(policy: Mapping[str, Any] | None) -> list[tuple[str, str | None]]:
    return [
        (str(r.get("resourceType")), r.get("criteria") if isinstance(r.get("criteria"), str)
         else None)
        for r in (policy or {}).get("resource") or []
        if isinstance(r, Mapping) and isinstance(r.get("resourceType"), str)
    ]  # fmt: skip


def _counted(rtype: str) -> bool:
    return rtype not in NO_PATIENT_DATA and rtype not in ADMIN_TYPES and rtype != "*"


def _only_compartment(criteria: str | None, name: str) -> bool:
    """Criteria that restrict to the tenant and nothing more: the member should see all of the
    tenant's data of that type (with more criteria, less is by design, and not a mismatch)."""
    params = parse_qsl((criteria or "").partition("?")[2], keep_blank_values=True)
    return (
        len(params) == 1 and params[0][0] == "_compartment" and is_tenant_value(params[0][1], name)
    )


def member_access(
    live: LiveMembership, rules: AccessRules, policies: Mapping[str, Mapping[str, Any]]
) -> MemberAccess:
    member = MemberAccess(live)
    wanted = {k for k in map(rules.key_of, desired_entries(live, rules)) if k}
    legacy = [("accessPolicy", live.access_policy)] if live.access_policy else []
    for label, entry in [*(("entry", e) for e in live.entries), *legacy]:
        policy_ref = entry if label == "accessPolicy" else None
        managed = rules.managed(entry) if label == "entry" else None
        if policy_ref is None:
            parsed = parse_entry(entry)
            policy_ref = parsed.policy if parsed is not None else None
        policy = policies.get(policy_ref or "")
        for rtype, _ in _rules(policy):
            if rtype == "*" and not member.star:
                member.star = f"a * rule of {policy_ref}"
            if _counted(rtype):
                member.types.add(rtype)
        if managed is None:
            name = f"its accessPolicy {policy_ref}" if label == "accessPolicy" else policy_ref
            member.unmanaged.append(str(name))
            continue
        account = managed.key.account
        if managed.key not in wanted:
            member.undeclared[account] = managed.key.describe()
    for key in wanted:
        rules_of = _rules(policies.get(key.policy))
        member.given[key.account] = member.given.get(key.account, frozenset()) | frozenset(
            t for t, _ in rules_of if _counted(t)
        )
        member.plain[key.account] = member.plain.get(key.account, frozenset()) | frozenset(
            t for t, c in rules_of if _counted(t) and _only_compartment(c, key.parameter)
        )
        member.types |= member.given[key.account]
    return member


def via_of(member: MemberAccess, account: str | None) -> str:
    if account is not None and account in member.undeclared:
        return f"a managed entry no tenant grants it ({member.undeclared[account]})"
    if member.undeclared and account is None:
        return "managed entries no tenant grants it (" + ", ".join(member.undeclared.values()) + ")"
    if len(member.unmanaged) == 1:
        return f"an unmanaged entry ({member.unmanaged[0]})"
    if member.unmanaged:
        return f"unmanaged entries ({', '.join(member.unmanaged)})"
    return "its access policies"


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
    refs = sorted(
        r
        for r, m in live.memberships.items()
        if rules.declared.get(r) or any(rules.key_of(e) for e in m.entries)
    )
    policies = read_policies(client, [live.memberships[r] for r in refs])
    members = [member_access(live.memberships[r], rules, policies) for r in refs]
    accounts = sorted(rules.owners)
    types = sorted({t for m in members for t in m.types})
    totals = tenant_totals(client, accounts, types, members)
    with ThreadPoolExecutor(max(1, parallelism), thread_name_prefix="verify-access") as pool:
        for found in pool.map(lambda m: _check_one(client, rules, m, accounts, totals), members):
            mismatches += found
    used = {k.account for m in live.memberships.values() for k in map(rules.key_of, m.entries) if k}
    used |= {k.account for keys in rules.declared.values() for k in keys}
    return AccessCheck(len(members), len(used), mismatches, tuple(types))


def read_policies(
    client: MedplumClient, memberships: Sequence[LiveMembership]
) -> dict[str, dict[str, Any]]:
    wanted: set[str] = set()
    for membership in memberships:
        for entry in membership.entries:
            parsed = parse_entry(entry)
            if parsed is not None and parsed.policy:
                wanted.add(parsed.policy)
        if membership.access_policy:
            wanted.add(membership.access_policy)
    ids = sorted(w.split("/", 1)[1] for w in wanted if w.startswith("AccessPolicy/"))
    return {f"AccessPolicy/{p['id']}": p for p in client.read_many("AccessPolicy", ids)}


def union_of(accounts: Sequence[str]) -> str:
    return ",".join(sorted(accounts))


def tenant_totals(
    client: MedplumClient,
    accounts: Sequence[str],
    types: Sequence[str],
    members: Sequence[MemberAccess],
) -> dict[tuple[str, str], int]:
    """(type, account or union of accounts) -> how many the tenant(s) hold, counted as admin."""
    keys = [(t, a) for t in types for a in accounts]
    for member in members:
        for rtype in member.types:
            given = [a for a, ts in member.given.items() if rtype in ts]
            if given:
                union = union_of(given)
                keys.append((rtype, union))
                # Another tenant's data the member is given anyway: a patient of both tenants.
                keys += [(rtype, f"{a}&{union}") for a in accounts if a not in given]
    keys = list(dict.fromkeys(keys))
    counts = client.count_many(
        [(t, [("_compartment", part) for part in a.split("&")]) for t, a in keys]
    )
    return dict(zip(keys, counts, strict=True))


@dataclass(frozen=True)
class Sight:
    """What one member sees, counted on its behalf: of each (type, tenant account) and of each
    type in all; `error` when the server would not count as the member."""

    by_tenant: dict[tuple[str, str], int] = field(default_factory=dict)
    in_all: dict[str, int] = field(default_factory=dict)
    in_tenants: dict[str, int] = field(default_factory=dict)  # in any tenant (with `union`)
    error: str | None = None


def count_as(
    client: MedplumClient,
    membership: str,
    types: Sequence[str],
    accounts: Sequence[str],
    *,
    union: bool = False,
) -> Sight:
    """One batch of counts on behalf of `membership` (X-Medplum-On-Behalf-Of); with `union`,
    also what it sees in any tenant (so what it sees outside every tenant is known)."""
    queries: list[tuple[str, list[tuple[str, str]]]] = []
    for rtype in types:
        queries += [(rtype, [("_compartment", a)]) for a in accounts]
        queries.append((rtype, []))
        if union:
            queries.append((rtype, [("_compartment", union_of(accounts))]))
    try:
        seen = iter(client.count_many(queries, on_behalf_of=membership))
    except MedplumError as exc:
        return Sight(error=getattr(exc, "outcome_text", "") or str(exc))
    sight = Sight()
    for rtype in types:
        for account in accounts:
            sight.by_tenant[(rtype, account)] = next(seen)
        sight.in_all[rtype] = next(seen)
        if union:
            sight.in_tenants[rtype] = next(seen)
    return sight


def _check_one(
    client: MedplumClient,
    rules: AccessRules,
    member: MemberAccess,
    accounts: Sequence[str],
    totals: Mapping[tuple[str, str], int],
) -> list[Mismatch]:
    ref = member.live.reference
    found: list[Mismatch] = []
    if member.live.admin:
        found.append(Unrestricted(ref, "project admin"))
    if member.live.unrestricted:
        return [*found, Unrestricted(ref, "no access policy")]
    if member.star:
        return [*found, Unrestricted(ref, member.star)]
    types = sorted(member.types)
    sight = count_as(client, ref, types, accounts)
    if sight.error is not None:
        return [*found, Unchecked(ref, sight.error)]
    for rtype in types:
        given_here = [a for a, ts in member.given.items() if rtype in ts]
        for account in accounts:
            count = sight.by_tenant[(rtype, account)]
            total = totals[(rtype, account)]
            tenant = rules.owners[account].name
            if account in given_here:
                if count < total and rtype in member.plain.get(account, frozenset()):
                    found.append(SeenCount(ref, rtype, count, total, tenant=tenant))
            else:
                # What it is given of this tenant anyway: its tenants' data that is this one's
                # too (a patient of both). More than that comes through something else.
                shared = totals[(rtype, f"{account}&{union_of(given_here)}")] if given_here else 0
                if count > shared:
                    via = via_of(member, account)
                    found.append(SeenCount(ref, rtype, count, shared, tenant=tenant, via=via))
        in_all = sight.in_all[rtype]
        expected = totals[(rtype, union_of(given_here))] if given_here else 0
        names = tuple(sorted(rules.owners[a].name for a in given_here))
        plain = all(rtype in member.plain.get(a, frozenset()) for a in given_here)
        if in_all > expected:
            found.append(
                SeenCount(ref, rtype, in_all, expected, tenants=names, via=via_of(member, None))
            )
        elif in_all < expected and plain:
            found.append(SeenCount(ref, rtype, in_all, expected, tenants=names))
    return found
