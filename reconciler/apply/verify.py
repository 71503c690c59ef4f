"""Compartment verification: does every resource in a patient's compartment carry the accounts
it should (and not the ones it should not)? Medplum propagates only the difference of each call
and at most ~1000 resources, and a cut-short propagation is not redone by repeating the call
(medplum-api.md), so stragglers are found here in batches and repaired one by one.

Accounts compare by id, as Medplum files compartments (model/accounts.py): a compartment
resource carrying an alias of a tenant's account is in that tenant. An **orphan** is a
resource carrying a tenant's account (or an alias) that it should not — its patient is no
member of that tenant — readable by the tenant's staff all the same."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from reconciler.apply.report import Report
from reconciler.apply.writes import set_accounts
from reconciler.logs import get_logger
from reconciler.medplum.accounts import account_entries, entry_for
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.compartment import PATIENT_LINK_FIELDS, patients_of
from reconciler.medplum.errors import MedplumError
from reconciler.model import AccountInfo, Change, LiveState, Owners, account_id, carries
from reconciler.plan.records import read_resources

log = get_logger("reconciler.apply.verify")


@dataclass(frozen=True)
class Expectation:
    must_have: frozenset[str]  # managed accounts (canonical) the compartment must carry
    must_not: frozenset[str]  # managed accounts it must not carry, in any form


@dataclass(frozen=True)
class Straggler:
    """A resource whose accounts are to be set from `have` to `want` (keys as read)."""

    resource: str  # Type/id
    patient: str  # its patient ("" for a resource outside any patient's compartment)
    have: tuple[str, ...]
    want: tuple[str, ...]
    entries: tuple[str | dict[str, object], ...] = ()  # `want` as sent (whole entries kept)
    orphan: bool = False  # carries a tenant's account its patient (or tenant) does not give it

    def added(self, owners: Owners[AccountInfo]) -> list[str]:
        return [a for a in self.want if a not in self.have and owners.owner(a)]

    def removed(self, owners: Owners[AccountInfo]) -> list[str]:
        return [c for a in self.have if a not in self.want and (c := owners.canonical(a))]


def _propagating(managed: Mapping[str, AccountInfo]) -> frozenset[str]:
    return frozenset(a for a, info in managed.items() if info.propagate)


def expectations_for_live(
    live: LiveState, managed: Mapping[str, AccountInfo], *, skip: Iterable[str] = ()
) -> dict[str, Expectation]:
    """`verify`: each patient's compartment carries exactly its propagating managed accounts
    (in any form the patient holds them). `skip`: patients left alone."""
    propagating = _propagating(managed)
    skipped = set(skip)
    out = {}
    for ref, patient in live.patients.items():
        if ref in skipped:
            continue
        has = frozenset(a for a in propagating if carries(patient.accounts, a))
        out[ref] = Expectation(must_have=has, must_not=propagating - has)
    return out


def expectations_for_changes(
    changes: Iterable[Change], managed: Mapping[str, AccountInfo]
) -> dict[str, Expectation]:
    """After apply: what each applied change added or removed with propagation."""
    owners = Owners.of(managed)
    out = {}
    for change in changes:
        added = {c for a in change.add if (c := owners.canonical(a)) and managed[c].propagate}
        removed = {c for a in change.remove if (c := owners.canonical(a)) and managed[c].propagate}
        out[change.ref] = Expectation(frozenset(added), frozenset(removed - added))
    return out


def _patient_of(resource: Mapping[str, object], wanted: Mapping[str, object]) -> str | None:
    """The first of `wanted` whose compartment holds the resource — by its meta.compartment,
    so one linked by a field verification does not read (an Appointment's participant) is
    checked too, not skipped as if it were in no patient's compartment."""
    return next((p for p in patients_of(resource) if p in wanted), None)


def _straggler(
    resource: Mapping[str, object], patient: str, must_have: Iterable[str], must_not: Iterable[str],
    *, orphan: bool = False,
) -> Straggler | None:  # fmt: skip
    pairs = account_entries(resource)
    have = [key for key, _ in pairs]
    dropped = {account_id(a) for a in must_not}
    want = [k for k in have if account_id(k) not in dropped]
    want += sorted(a for a in must_have if not carries(want, a))
    if want == have:
        return None
    originals = {k: o for k, o in pairs if o is not None}
    entries = tuple(entry_for(k, originals) for k in want)
    ref = f"{resource['resourceType']}/{resource['id']}"
    return Straggler(ref, patient, tuple(have), tuple(want), entries, orphan)


def find_stragglers(
    client: MedplumClient, expectations: Mapping[str, Expectation]
) -> tuple[list[Straggler], int]:
    """Read the compartments of all patients in batches; return (stragglers, resources read)."""
    relevant = {p: e for p, e in expectations.items() if e.must_have or e.must_not}
    stragglers: list[Straggler] = []
    read = 0
    if not relevant:
        return stragglers, read
    elements = ["meta", *PATIENT_LINK_FIELDS]
    for resource in client.read_compartments(sorted(relevant), elements=elements):
        read += 1
        patient = _patient_of(resource, relevant)
        if patient is None:
            continue
        expect = relevant[patient]
        found = _straggler(resource, patient, expect.must_have, expect.must_not)
        if found is not None:
            stragglers.append(found)
    return stragglers, read


def find_orphans(
    client: MedplumClient,
    managed: Mapping[str, AccountInfo],
    checked: Iterable[str],
) -> tuple[list[Straggler], dict[str, int]]:
    """Compartment resources carrying a propagating tenant's account (or an alias) whose patient
    is outside `checked` (the patients whose compartments `find_stragglers` read) and does not
    carry it. (orphans, how many compartment resources carry each account)."""
    seen = set(checked)
    carrying: dict[str, tuple[Mapping[str, object], str, list[str]]] = {}
    counts: dict[str, int] = {}
    elements = ["meta", *PATIENT_LINK_FIELDS]
    for account in sorted(_propagating(managed)):
        counts[account] = 0
        for resource in client.read_compartments([account], elements=elements):
            counts[account] += 1
            holders = patients_of(resource)
            if not holders or any(p in seen for p in holders):
                continue  # in no patient's compartment, or checked with its patient's
            patient = holders[0]
            ref = f"{resource['resourceType']}/{resource['id']}"
            carrying.setdefault(ref, (resource, patient, []))[2].append(account)
    if not carrying:
        return [], counts
    patients = read_resources(client, sorted({p for _, p, _ in carrying.values()}))
    orphans = []
    for held, patient, accounts in carrying.values():
        owner = patients.get(patient)
        foreign = [a for a in accounts if owner is None or not carries(owner.accounts, a)]
        found = _straggler(held, patient, (), foreign, orphan=True) if foreign else None
        if found is not None:
            orphans.append(found)
    return sorted(orphans, key=lambda s: s.resource), counts


def repair(
    client: MedplumClient,
    stragglers: Iterable[Straggler],
    *,
    parallelism: int = 10,
    on_error: Callable[[Straggler, str], None] | None = None,
) -> int:
    """Set each straggler's accounts (no propagation: it is not a Patient). Returns repaired."""

    def fix(item: Straggler) -> bool:
        try:
            entries = list(item.entries) if item.entries else list(item.want)
            set_accounts(client, item.resource, entries, propagate=False, job_timeout=0)
        except MedplumError as exc:
            if on_error is not None:
                on_error(item, str(exc))
            log.warning(
                "repair failed", resource=item.resource, patient=item.patient, error=str(exc)
            )
            return False
        log.info("repaired", resource=item.resource, patient=item.patient)
        return True

    items = list(stragglers)
    if not items:
        return 0
    with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        return sum(pool.map(fix, items))


def verify_changes(
    client: MedplumClient,
    report: Report,
    managed: Mapping[str, AccountInfo],
    *,
    parallelism: int = 10,
) -> None:
    """After apply: read the compartments of the patients it updated, repair stragglers, and
    put the figures in the report."""
    expectations = expectations_for_changes((o.change for o in report.succeeded_patients), managed)
    started = time.monotonic()
    stragglers, read = find_stragglers(client, expectations)
    report.verified = True
    report.compartment_read = read
    report.stragglers = len(stragglers)
    report.repaired = repair(
        client,
        stragglers,
        parallelism=parallelism,
        on_error=lambda s, reason: report.unrepaired.append(
            f"{s.patient}: compartment resource {s.resource} not repaired: {reason}"
        ),
    )
    log.info(
        "verified",
        patients=len(expectations),
        compartment_resources=read,
        stragglers=len(stragglers),
        repaired=report.repaired,
        duration_ms=round((time.monotonic() - started) * 1000),
    )
