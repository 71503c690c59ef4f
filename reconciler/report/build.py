"""The access review's reads: the manifests' live state, every membership of the project (not
only the ones the manifests name — a review covers everybody), their policies, the tenants'
totals, and one batch of counts on behalf of each member, `parallelism` at a time. Reads only."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from reconciler import __version__
from reconciler.apply.verify_access import (
    EntryDrift,
    MemberAccess,
    Sight,
    count_as,
    drift_of,
    member_access,
    read_policies,
    tenant_totals,
    union_of,
)
from reconciler.clock import iso_utc
from reconciler.errors import PlanError
from reconciler.medplum.client import MedplumClient
from reconciler.model import ManifestSet
from reconciler.plan.access import access_rules, plan_access
from reconciler.plan.live import read_live_state
from reconciler.plan.records import MEMBERSHIP, to_live_membership
from reconciler.report.model import AccessReport, Header, Row
from reconciler.report.rows import Known, member_rows

FALLBACK_TYPES = ("Patient",)  # when no policy restricts any type: who sees the patients


def build_report(
    client: MedplumClient,
    manifests: ManifestSet,
    *,
    server: str,
    client_name: str,
    this_membership: str | None,
    parallelism: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> AccessReport:
    tenants = manifests.tenants
    live = read_live_state(client, tenants, parallelism=parallelism)
    planned = plan_access(tenants, live)
    if planned.problems:
        raise PlanError(planned.problems)
    everyone = {m.reference: m for m in map(to_live_membership, client.search_all(MEMBERSHIP, []))}
    live = replace(live, memberships={**everyone, **live.memberships})
    rules = access_rules(tenants, live)
    refs = sorted(live.memberships)
    policies = read_policies(client, [live.memberships[r] for r in refs])
    members = [member_access(live.memberships[r], rules, policies) for r in refs]
    accounts = sorted(rules.owners, key=lambda a: rules.owners[a].name)  # by tenant name
    types = sorted({t for m in members for t in m.types}) or list(FALLBACK_TYPES)
    totals = tenant_totals(client, accounts, types, members)
    extra = [(t, key) for t in types for key in ("", union_of(accounts))]
    counted = client.count_many([(t, [("_compartment", key)] if key else []) for t, key in extra])
    totals.update(zip(extra, counted, strict=True))
    drift = [d for d in drift_of(planned.changes) if isinstance(d, EntryDrift)]

    def types_of(member: MemberAccess) -> list[str]:
        live_m = member.live
        open_ = live_m.admin or live_m.unrestricted or bool(member.star)
        return types if open_ else sorted(member.types)

    done = 0

    def sight_of(member: MemberAccess) -> tuple[MemberAccess, Sight, list[str]]:
        counted_types = types_of(member)
        return (
            member,
            count_as(client, member.live.reference, counted_types, accounts, union=True),
            counted_types,
        )

    rows: list[Row] = []
    with ThreadPoolExecutor(max(1, parallelism), thread_name_prefix="report") as pool:
        for member, sight, counted_types in pool.map(sight_of, members):
            ref = member.live.reference
            known = Known(
                member, sight, counted_types, [d for d in drift if d.membership == ref],
                this_client=ref == this_membership,
            )  # fmt: skip
            rows += member_rows(known, rules, accounts, totals)
            done += 1
            if progress is not None:
                progress(done, len(members))
    header = Header(
        server=server,
        client=client_name,
        created_at=iso_utc(millis=False),
        tool_version=f"medplum-tenancy-reconciler {__version__}",
        manifests_digest=manifests.digest,
        tenants=tuple(rules.owners[a].name for a in accounts),
        types=tuple(types),
    )
    return AccessReport(header, tuple(rows))
