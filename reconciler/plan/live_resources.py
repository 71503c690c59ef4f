"""Live read for other resources (design section 9): ids per type in POST `_search` batches of
1,000, identifiers as comma lists, searches and each authoritative tenant's members of the
types it names paged by cursor — never one request per resource."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from reconciler.medplum.accounts import account_entries, first_identifier
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import HTTPStatusError
from reconciler.model import LivePatient, ResourceSelector, SelectorKind, Tenant

ELEMENTS = ("meta", "identifier")


def to_live_resource(resource: dict[str, Any]) -> LivePatient:
    entries = account_entries(resource)
    return LivePatient(
        reference=f"{resource['resourceType']}/{resource['id']}",
        version_id=str((resource.get("meta") or {}).get("versionId", "")),
        accounts=tuple(key for key, _ in entries),
        identifier=first_identifier(resource),
        originals=tuple((k, json.dumps(e, sort_keys=True)) for k, e in entries if e is not None),
    )


def read_resources(client: MedplumClient, refs: Sequence[str]) -> dict[str, LivePatient]:
    """Fresh accounts and versions of these resources, any types (batched per type)."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for ref in refs:
        rtype, rid = ref.split("/", 1)
        by_type[rtype].append(rid)
    found: dict[str, LivePatient] = {}
    for rtype, ids in by_type.items():
        for resource in client.iter_many(rtype, ids, elements=ELEMENTS):
            live = to_live_resource(resource)
            found[live.reference] = live
    return found


def read_live_resources(
    client: MedplumClient, tenants: Sequence[Tenant], accounts: dict[str, str]
) -> tuple[dict[str, LivePatient], dict[str, frozenset[str]], list[str]]:
    """(resources in scope, each tenant's members, problems)."""
    problems: list[str] = []
    resources: dict[str, LivePatient] = {}
    members: dict[str, set[str]] = {t.name: set() for t in tenants}
    selectors = [(t, s) for t in tenants for s in t.resources]
    if not selectors:
        return {}, {t.name: frozenset() for t in tenants}, []

    def keep(resource: dict[str, Any]) -> str:
        live = to_live_resource(resource)
        resources[live.reference] = live
        return live.reference

    def where(tenant: Tenant, selector: ResourceSelector) -> str:
        return f"{selector.location}: error: {selector.describe()}"

    ids: dict[str, list[str]] = defaultdict(list)
    tokens: dict[str, list[str]] = defaultdict(list)
    for _, selector in selectors:
        if selector.kind is SelectorKind.ID:
            ids[selector.type].append(selector.value.split("/", 1)[1])
        elif selector.kind is SelectorKind.IDENTIFIER:
            tokens[selector.type].append(selector.value)
    found: set[str] = set()
    for rtype, wanted in ids.items():
        found |= {keep(r) for r in client.iter_many(rtype, wanted, elements=ELEMENTS)}
    matches = {
        rtype: client.search_by_identifiers(rtype, wanted, elements=ELEMENTS)
        for rtype, wanted in tokens.items()
    }
    for tenant, selector in selectors:
        if selector.kind is SelectorKind.ID:
            if selector.value not in found:
                problems.append(
                    f"{where(tenant, selector)} does not exist (tenant {tenant.name!r})"
                )
                continue
            members[tenant.name].add(selector.value)
        elif selector.kind is SelectorKind.IDENTIFIER:
            hits = matches[selector.type].get(selector.value, [])
            if len(hits) != 1:
                problems.append(
                    f"{where(tenant, selector)} matches {len(hits)} resources, expected exactly "
                    f"1 (tenant {tenant.name!r})"
                )
                continue
            members[tenant.name].add(keep(hits[0]))
        else:
            query = [*parse_qsl(selector.value, keep_blank_values=True),
                     ("_elements", ",".join(ELEMENTS))]  # fmt: skip
            try:
                hits = list(client.search_all(selector.type, query, sort_by_last_updated=True))
            except HTTPStatusError as exc:
                if exc.status != 400:
                    raise
                problems.append(
                    f"{where(tenant, selector)} was rejected by the server: {exc.outcome_text} "
                    f"(tenant {tenant.name!r})"
                )
                continue
            if not hits:
                problems.append(
                    f"{where(tenant, selector)} matches no resources (tenant {tenant.name!r})"
                )
            members[tenant.name].update(keep(r) for r in hits)
    if problems:
        return resources, {k: frozenset(v) for k, v in members.items()}, problems
    # Authoritative scope: per type a tenant names, every resource of it carrying the account.
    for tenant in tenants:
        if not tenant.authoritative:
            continue
        for rtype in sorted(tenant.resource_types):
            query = [("_compartment", accounts[tenant.name]), ("_elements", ",".join(ELEMENTS))]
            for resource in client.search_all(rtype, query, sort_by_last_updated=True):
                keep(resource)
    return resources, {k: frozenset(v) for k, v in members.items()}, problems
