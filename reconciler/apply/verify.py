"""Compartment verification: does every resource in a patient's compartment carry the accounts
it should (and not the ones it should not)? Medplum propagates only the difference of each call
and at most ~1000 resources, and a cut-short propagation is not redone by repeating the call
(medplum-api.md), so stragglers are found here in batches and repaired one by one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from reconciler.apply.report import Report
from reconciler.apply.writes import set_accounts
from reconciler.logs import get_logger
from reconciler.medplum.accounts import get_resource_accounts
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.compartment import PATIENT_LINK_FIELDS
from reconciler.medplum.errors import MedplumError
from reconciler.model import AccountInfo, Change, LiveState

log = get_logger("reconciler.apply.verify")


@dataclass(frozen=True)
class Expectation:
    must_have: frozenset[str]
    must_not: frozenset[str]


@dataclass(frozen=True)
class Straggler:
    resource: str  # Type/id
    patient: str
    have: tuple[str, ...]
    want: tuple[str, ...]


def _propagating(managed: Mapping[str, AccountInfo]) -> frozenset[str]:
    return frozenset(a for a, info in managed.items() if info.propagate)


def expectations_for_live(
    live: LiveState, managed: Mapping[str, AccountInfo]
) -> dict[str, Expectation]:
    """`verify`: each patient's compartment carries exactly its propagating managed accounts."""
    propagating = _propagating(managed)
    return {
        ref: Expectation(
            must_have=frozenset(a for a in p.accounts if a in propagating),
            must_not=frozenset(a for a in propagating if a not in p.accounts),
        )
        for ref, p in live.patients.items()
    }


def expectations_for_changes(
    changes: Iterable[Change], managed: Mapping[str, AccountInfo]
) -> dict[str, Expectation]:
    """After apply: what each applied change added or removed with propagation."""
    propagating = _propagating(managed)
    return {
        c.ref: Expectation(
            must_have=frozenset(a for a in c.add if a in propagating),
            must_not=frozenset(a for a in c.remove if a in propagating),
        )
        for c in changes
    }


def _patient_of(resource: Mapping[str, object], patients: Iterable[str]) -> str | None:
    wanted = set(patients)
    for field in PATIENT_LINK_FIELDS:
        ref = resource.get(field)
        if isinstance(ref, Mapping) and ref.get("reference") in wanted:
            return str(ref["reference"])
    return None


def find_stragglers(
    client: MedplumClient, expectations: Mapping[str, Expectation]
) -> tuple[list[Straggler], int]:
    """Read the compartments of all patients in batches; return (stragglers, resources read)."""
    relevant = {p: e for p, e in expectations.items() if e.must_have or e.must_not}
    stragglers: list[Straggler] = []
    read = 0
    if not relevant:
        return stragglers, read
    for resource in client.read_compartments(sorted(relevant), elements=list(PATIENT_LINK_FIELDS)):
        read += 1
        patient = _patient_of(resource, relevant)
        if patient is None:
            continue
        expect = relevant[patient]
        have = get_resource_accounts(resource)
        want = [a for a in have if a not in expect.must_not]
        want += sorted(a for a in expect.must_have if a not in want)
        if want != have:
            ref = f"{resource['resourceType']}/{resource['id']}"
            stragglers.append(Straggler(ref, patient, tuple(have), tuple(want)))
    return stragglers, read


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
            set_accounts(client, item.resource, item.want, propagate=False, job_timeout=0)
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
