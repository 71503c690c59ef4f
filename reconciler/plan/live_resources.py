"""Live read for other resources (design section 9): the tenants' `resources` selectors through
the one resolver, then each authoritative tenant's current members of the types it names
(paged by cursor) — never one request per resource."""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.medplum.client import MedplumClient
from reconciler.model import LiveResource, Tenant
from reconciler.plan.records import ELEMENTS, to_live_resource
from reconciler.plan.resolve import members_by_tenant, pick_of, resolve


def read_live_resources(
    client: MedplumClient, tenants: Sequence[Tenant], accounts: dict[str, str]
) -> tuple[dict[str, LiveResource], dict[str, frozenset[str]], list[str]]:
    """(resources in scope, each tenant's members, problems)."""
    picks = [pick_of(t.name, s) for t in tenants for s in t.resources]
    if not picks:
        return {}, {t.name: frozenset() for t in tenants}, []
    found = resolve(
        client,
        picks,
        noun="resources",
        convert=to_live_resource,
        ref_of=lambda r: r.ref,
        elements=ELEMENTS,
    )
    members = members_by_tenant(picks, found.hits, (t.name for t in tenants))
    if found.problems:
        return found.found, members, found.problems
    # Authoritative scope: per type a tenant names, every resource of it carrying the account.
    for tenant in tenants:
        if not tenant.authoritative:
            continue
        for rtype in sorted(tenant.resource_types):
            query = [("_compartment", accounts[tenant.name]), ("_elements", ",".join(ELEMENTS))]
            for resource in client.search_all(rtype, query, sort_by_last_updated=True):
                live = to_live_resource(resource)
                found.found[live.ref] = live
    return found.found, members, []
