"""Read the live state the planner needs, in batches: resolve every account and selector, list
the current members of authoritative tenants, and keep each in-scope resource's accounts and
version. Request count grows with pages (1000 patients each), never one request per patient."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from reconciler.errors import ResolveError
from reconciler.logs import get_logger
from reconciler.medplum.client import MedplumClient
from reconciler.model import (
    LiveResource,
    LiveState,
    Tenant,
    account_id,
    id_selectors,
    other_selectors,
    selector_location,
)
from reconciler.plan.live_access import read_access
from reconciler.plan.live_resources import read_live_resources
from reconciler.plan.records import ELEMENTS, to_live_resource
from reconciler.plan.resolve import account_pick, members_by_tenant, pick_of, resolve

log = get_logger("reconciler.plan.live")

MAX_READS_IN_FLIGHT = 4
Progress = Callable[[int], None]


def resolve_accounts(client: MedplumClient, tenants: Sequence[Tenant]) -> dict[str, str]:
    """tenant name → `Type/id`; every account must exist and resolve to exactly one resource."""
    resolved, problems = _resolve_accounts(client, tenants)
    if problems:
        raise ResolveError(problems)
    return resolved


def _resolve_accounts(
    client: MedplumClient, tenants: Sequence[Tenant]
) -> tuple[dict[str, str], list[str]]:
    picks = [account_pick(t.name, t.account) for t in tenants]
    found = resolve(
        client,
        picks,
        noun="resources",
        convert=lambda r: f"{r['resourceType']}/{r['id']}",
        ref_of=str,
        elements=("id",),
    )
    problems = found.problems
    resolved = {p.tenant: next(iter(hits)) for p, hits in zip(picks, found.hits, strict=True)
                if hits}  # fmt: skip
    # Medplum files compartments by id: two accounts with one id are one tenant's compartment.
    owners: dict[str, Tenant] = {}
    for tenant in tenants:
        target = resolved.get(tenant.name)
        if target is None:
            continue
        first = owners.setdefault(account_id(target) or target, tenant)
        if first is not tenant:
            same = (
                f"resolves to {target}, the account of tenant {first.name!r}"
                if resolved[first.name] == target
                else f"resolves to {target}, which has the id of tenant {first.name!r}'s "
                f"account {resolved[first.name]} (Medplum files compartments by id)"
            )
            problems.append(
                f"{tenant.account.location}: error: spec.account: {same} "
                f"({first.account.location.short})"
            )
    return resolved, problems


def _scan(
    client: MedplumClient, account: str, known: Mapping[str, LiveResource]
) -> list[LiveResource]:
    """The account's current members, but those the selectors already read (`known`, filled
    meanwhile on the main thread): at a million patients most are both, and a second copy of
    each would be a third of the plan's memory."""
    params = [("_compartment", account), ("_elements", ",".join(ELEMENTS))]
    found = client.search_all("Patient", params, sort_by_last_updated=True)
    return [to_live_resource(r) for r in found if f"Patient/{r.get('id')}" not in known]


def _missing(
    tenants: Sequence[Tenant], patients: Mapping[str, LiveResource]
) -> list[tuple[tuple[int, int], str]]:
    """A by-id selector whose patient the server does not have, as a pick would say it, by
    (tenant, selector) place."""
    return [
        ((t, i), f"{selector_location(tenant.patients, i)}: error: {ref} does not exist "
                 f"(tenant {tenant.name!r})")
        for t, tenant in enumerate(tenants)
        for i, ref in id_selectors(tenant.patients)
        if ref not in patients
    ]  # fmt: skip


def read_live_state(
    client: MedplumClient,
    tenants: Sequence[Tenant],
    *,
    progress: Progress | None = None,
    parallelism: int = 1,
) -> LiveState:
    """Independent reads (id batches, identifier batches, each search, each authoritative
    tenant's members) run `parallelism` at a time; results are merged on this thread."""
    started = time.monotonic()
    sent = client.requests_sent
    # Account problems are reported together with the selectors' (not one round at a time).
    accounts, problems = _resolve_accounts(client, tenants)
    accounts_missing = bool(problems)
    # Each read in flight holds a page of up to 1000 patients: past 4 at a time the plan only
    # gets bigger, not faster (measured: 100,000 patients, 15 s either way, 264 vs 310 MB).
    workers = max(1, min(parallelism, MAX_READS_IN_FLIGHT))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read") as pool:
        # Current members of authoritative tenants are in scope: they may lose the account.
        patients: dict[str, LiveResource] = {}
        member_jobs: list[Future[list[LiveResource]]] = []

        def scan_members() -> None:
            # Queued behind the selectors' reads, so by the time a scan runs most of its
            # members are known and are not read into a second copy (the same work in the
            # same pool: no slower).
            member_jobs.extend(
                pool.submit(_scan, client, accounts[t.name], patients)
                for t in tenants
                if t.authoritative and t.name in accounts
            )

        # By-id selectors are read straight from the manifests' columns (no pick each: a
        # million of them); identifier and search selectors as picks.
        places = [(t, i, s) for t, tenant in enumerate(tenants)
                  for i, s in other_selectors(tenant.patients)]  # fmt: skip
        picks = [pick_of(tenants[t].name, s) for t, _, s in places]
        found = resolve(
            client,
            picks,
            noun="patients",
            convert=to_live_resource,
            ref_of=lambda r: r.ref,
            elements=ELEMENTS,
            pool=pool,
            on_keep=progress,
            found=patients,
            queued=scan_members,
            refs=[("Patient", (ref for _, ref in id_selectors(t.patients))) for t in tenants],
            convert_read=to_live_resource,
        )
        # Every selector's problem in the list's order, whichever way it was read.
        pairs = zip(found.problem_picks, found.problems, strict=True)
        by_pick = [((places[k][0], places[k][1]), text) for k, text in pairs]
        problems += [text for _, text in sorted(by_pick + _missing(tenants, patients))]
        if accounts_missing:
            # Access and other resources need every account; report what we have so far.
            for job in member_jobs:
                job.cancel()
            raise ResolveError(problems)
        memberships, grant_members, access_problems = read_access(client, tenants)
        problems += access_problems
        resources, resource_members, resource_problems = read_live_resources(
            client, tenants, accounts
        )
        problems += resource_problems
        if problems:
            for job in member_jobs:
                job.cancel()
            raise ResolveError(problems)
        for job in member_jobs:
            for patient in job.result():
                patients.setdefault(patient.ref, patient)  # one object per patient
                if progress is not None:
                    progress(len(patients))

    log.info(
        "live state read",
        tenants=len(tenants),
        patients_in_scope=len(patients),
        requests=client.requests_sent - sent,
        duration_ms=round((time.monotonic() - started) * 1000),
    )
    members = members_by_tenant(picks, found.hits, (t.name for t in tenants))
    for tenant in tenants:  # and what the by-id selectors name, the manifest's own strings
        by_id = (ref for _, ref in id_selectors(tenant.patients) if ref in patients)
        members[tenant.name] = members[tenant.name].union(by_id)
    return LiveState(
        accounts=accounts,
        members=members,
        patients=patients,
        memberships=memberships,
        grant_members=grant_members,
        resources=resources,
        resource_members=resource_members,
    )
