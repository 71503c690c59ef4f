"""Live read for tenant access (design section 8): the policies the grants name, the
memberships the grants' members resolve to (through the one resolver), and the memberships
already holding entries under a granted policy — in batches, never one request per member."""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.errors import PreflightError
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import HTTPStatusError
from reconciler.model import LiveMembership, Tenant
from reconciler.plan.policy import scope_problems
from reconciler.plan.records import MEMBERSHIP, to_live_membership
from reconciler.plan.resolve import pick_of, resolve


def access_needs_admin(who: str = "") -> PreflightError:
    """Only project admins may read ProjectMemberships (medplum-api.md, "There is no read-only
    admin"), and any client that can read them can rewrite them: so a pull request's job
    plans the access half offline, from git."""
    return PreflightError(
        "planning access needs a project-admin client: only project admins may read "
        f"ProjectMemberships{who}; in a pull request, review access offline with "
        "`reconciler diff --base REF`, or plan patients and resources alone with --skip-access"
    )


def _policy_problems(client: MedplumClient, tenants: Sequence[Tenant]) -> list[str]:
    """Every policy must exist and be tenant-scoped by its parameter (plan/policy.py): judged
    by what it grants, so a rule without the tenant's criteria fails the plan."""
    wanted = {g.policy for t in tenants for g in t.access}
    if not wanted:
        return []
    found = {
        f"AccessPolicy/{p['id']}": p
        for p in client.read_many("AccessPolicy", [w.split("/", 1)[1] for w in sorted(wanted)])
    }
    problems: list[str] = []
    for tenant in tenants:
        for i, grant in enumerate(tenant.access):
            policy = found.get(grant.policy)
            where = f"{grant.location}: error: spec.access[{i}].policy"
            if policy is None:
                problems.append(f"{where}: {grant.policy} does not exist (tenant {tenant.name!r})")
                continue
            problems += [
                f"{where}: {problem} (tenant {tenant.name!r})"
                for problem in scope_problems(policy, grant.parameter)
            ]
    return problems


def read_access(
    client: MedplumClient,
    tenants: Sequence[Tenant],
) -> tuple[dict[str, LiveMembership], dict[tuple[str, int], frozenset[str]], list[str]]:
    """(memberships in scope, members of each grant, problems)."""
    try:
        return _read_access(client, tenants)
    except HTTPStatusError as exc:
        if exc.status == 403 and any(t.access for t in tenants):
            raise access_needs_admin(" (the server answered 403)") from None
        raise


def _read_access(
    client: MedplumClient, tenants: Sequence[Tenant]
) -> tuple[dict[str, LiveMembership], dict[tuple[str, int], frozenset[str]], list[str]]:
    problems = _policy_problems(client, tenants)
    slots = [(t.name, i, m) for t in tenants for i, g in enumerate(t.access) for m in g.members]
    picks = [pick_of(name, member) for name, _, member in slots]
    found = resolve(
        client,
        picks,
        noun="memberships",
        convert=to_live_membership,
        ref_of=lambda m: m.reference,
        sort_searches=False,
    )
    problems += found.problems
    grant_members: dict[tuple[str, int], set[str]] = {
        (t.name, i): set() for t in tenants for i in range(len(t.access))
    }
    for (name, index, _), hits in zip(slots, found.hits, strict=True):
        grant_members[(name, index)].update(hits)
    memberships = found.found
    # Scope: memberships holding an entry under a granted policy may lose it (authoritative).
    if any(t.authoritative and t.access for t in tenants):
        for policy in sorted({g.policy for t in tenants if t.authoritative for g in t.access}):
            for resource in client.search_all(MEMBERSHIP, [("access-policy", policy)]):
                live = to_live_membership(resource)
                memberships[live.reference] = live
    return memberships, {k: frozenset(v) for k, v in grant_members.items()}, problems
