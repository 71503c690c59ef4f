"""Demo data for `reconciler sandbox seed`: what examples/tenants/ refers to, plus N generated
patients with K compartment resources each. Ids are fixed (UUID-shaped, uuid5 for generated
ones) so seeding twice changes nothing and the examples can select patients by id."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from reconciler.sandbox.access import PROJECT_ID, PROJECT_NAME
from reconciler.sandbox.ops import observation_status_concept_map
from reconciler.sandbox.store import Resource, Store

MRN = "http://hospital.example/mrn"
ORG_SYSTEM = "https://example.org/orgs"

ORG_NORTH = "0f1e0001-0000-4000-8000-000000000001"
ORG_SOUTH = "0f1e0001-0000-4000-8000-000000000002"
ORG_RESEARCH = "0f1e0001-0000-4000-8000-000000000003"
ORG_LEGACY = "0f1e0001-0000-4000-8000-000000000009"  # unmanaged: no manifest mentions it
DR_NORTH = "0f1e0002-0000-4000-8000-000000000001"
DR_SOUTH = "0f1e0002-0000-4000-8000-000000000002"

LOC_SYSTEM = "https://example.org/loc"
SERVICE_SYSTEM = "https://example.org/services"
# (id, identifier value, name, managing Organization) — the README's "Other resources" names
# Location N-1 by identifier and the rest by `Location?organization=…`.
LOCATIONS = [
    ("0f1e0008-0000-4000-8000-000000000001", "N-1", "Northside Main Building", ORG_NORTH),
    ("0f1e0008-0000-4000-8000-000000000002", "N-2", "Northside Annex", ORG_NORTH),
    ("0f1e0008-0000-4000-8000-000000000003", "S-1", "Southside Clinic", ORG_SOUTH),
]
HEALTHCARE_SERVICES = [
    ("0f1e0009-0000-4000-8000-000000000001", "north-gp", "Northside General Practice", ORG_NORTH),
    ("0f1e0009-0000-4000-8000-000000000002", "south-gp", "Southside General Practice", ORG_SOUTH),
]
CLINIC_STAFF_POLICY = "0f1e0004-0000-4000-8000-000000000001"
STAFF_SYSTEM = "https://example.org/staff"
# The types a clinic's staff see through "clinic-staff": Patient and the Patient-compartment
# types the demo data holds or clinics commonly use.
CLINIC_TYPES = (
    "Patient", "Observation", "Encounter", "Condition", "DiagnosticReport", "MedicationRequest",
    "AllergyIntolerance", "Procedure", "Immunization", "DocumentReference",
)  # fmt: skip
# (client id = secret prefix, Practitioner id, membership id, display, staff identifier)
STAFF = [
    ("north-nurse", "0f1e0002-0000-4000-8000-000000000011", "0f1e0006-0000-4000-8000-000000000001",
     "Nurse North", "n-0001"),
    ("north-desk", "0f1e0002-0000-4000-8000-000000000012", "0f1e0006-0000-4000-8000-000000000002",
     "Front Desk North", "n-0002"),
    ("south-nurse", "0f1e0002-0000-4000-8000-000000000021", "0f1e0006-0000-4000-8000-000000000003",
     "Nurse South", "s-0001"),
    ("south-desk", "0f1e0002-0000-4000-8000-000000000022", "0f1e0006-0000-4000-8000-000000000004",
     "Front Desk South", "s-0002"),
    ("research-analyst", "0f1e0002-0000-4000-8000-000000000031",
     "0f1e0006-0000-4000-8000-000000000005", "Research Analyst", "r-0001"),
]  # fmt: skip
STAFF_SECRET_SUFFIX = "-secret"
PROJECT_REF = {"reference": f"Project/{PROJECT_ID}", "display": PROJECT_NAME}

# (id suffix, MRN, given, family, birthDate, accounts before any apply)
NAMED_PATIENTS = [
    (1, "A-1001", "Ana", "Rivera", "1984-02-01", [ORG_LEGACY]),
    (2, "A-1002", "Ben", "Okafor", "1990-07-12", []),
    (3, "A-1003", "Chloe", "Nguyen", "1975-11-30", [ORG_NORTH]),
    (4, "A-1004", "Dev", "Patel", "2001-03-05", []),
    (5, "A-1005", "Emma", "Okafor", "1968-09-21", [ORG_SOUTH]),
    (6, "A-1006", "Farid", "Haddad", "1955-01-17", [ORG_SOUTH]),
]
FAMILIES = ["Smith", "Garcia", "Kim", "Müller", "Rossi", "Silva", "Cohen", "Ivanova", "Sato"]
GIVENS = ["Alex", "Sam", "Jordan", "Maria", "Wei", "Noor", "Lena", "Omar", "Ines", "Tom"]
NAMESPACE = uuid.UUID("0f1e0000-0000-4000-8000-000000000000")
AUTHOR = {"reference": "ClientApplication/sandbox-admin", "display": "sandbox-admin"}


def named_patient_id(n: int) -> str:
    return f"0f1e0003-0000-4000-8000-{n:012d}"


def _org(rid: str, name: str, ident: str | None) -> Resource:
    org: Resource = {"resourceType": "Organization", "id": rid, "name": name, "meta": {}}
    if ident:
        org["identifier"] = [{"system": ORG_SYSTEM, "value": ident}]
    return org


def _meta(accounts: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"author": dict(AUTHOR)}
    if accounts:
        meta["accounts"] = [{"reference": f"Organization/{a}"} for a in accounts]
    return meta


def _patient(
    rid: str, mrn: str, given: str, family: str, birth: str, accounts: list[str], gp: str | None
) -> Resource:
    patient: Resource = {
        "resourceType": "Patient",
        "id": rid,
        "meta": _meta(accounts),
        "identifier": [{"system": MRN, "value": mrn}],
        "name": [{"family": family, "given": [given]}],
        "birthDate": birth,
    }
    if gp:
        patient["generalPractitioner"] = [{"reference": f"Practitioner/{gp}"}]
    return patient


def _compartment(pid: str, accounts: list[str], k: int, key: str) -> Iterator[Resource]:
    for j in range(k):
        rid = str(uuid.uuid5(NAMESPACE, f"{key}-r{j}"))
        if j % 2 == 0:
            yield {
                "resourceType": "Observation",
                "id": rid,
                "meta": _meta(accounts),
                "status": "final",
                "code": {"text": ["heart rate", "blood pressure", "weight"][j // 2 % 3]},
                "subject": {"reference": f"Patient/{pid}"},
            }
        else:
            yield {
                "resourceType": "Encounter",
                "id": rid,
                "meta": _meta(accounts),
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": f"Patient/{pid}"},
            }


def staff_resources() -> Iterator[Resource]:
    """The parameterized "clinic-staff" AccessPolicy and demo staff: a Practitioner, a
    ClientApplication to log in with (secret `<id>-secret`) and a ProjectMembership each, with
    no access yet — so each sees everything (Medplum's fail-open) until a manifest grants it."""
    yield {
        "resourceType": "AccessPolicy",
        "id": CLINIC_STAFF_POLICY,
        "meta": {},
        "name": "clinic-staff",
        "compartment": {"reference": "%organization"},
        "resource": [
            {"resourceType": t, "criteria": f"{t}?_compartment=%organization"} for t in CLINIC_TYPES
        ],
    }
    for client_id, prac, membership, display, ident in STAFF:
        family = display.rsplit(" ", 1)[1]
        yield {
            "resourceType": "Practitioner",
            "id": prac,
            "meta": {},
            "name": [{"family": family, "given": display.rsplit(" ", 1)[:1], "text": display}],
        }
        yield {
            "resourceType": "ClientApplication",
            "id": client_id,
            "meta": {},
            "name": client_id,
            "secret": client_id + STAFF_SECRET_SUFFIX,
        }
        yield {
            "resourceType": "ProjectMembership",
            "id": membership,
            "meta": {},
            "project": dict(PROJECT_REF),
            "user": {"reference": f"ClientApplication/{client_id}", "display": client_id},
            "profile": {"reference": f"Practitioner/{prac}", "display": display},
            "identifier": [{"system": STAFF_SYSTEM, "value": ident}],
        }


def generated_accounts(i: int) -> tuple[list[str], str | None]:
    """Accounts and general practitioner of generated patient i (see README, "Demo data")."""
    gp = (DR_NORTH, DR_SOUTH, None)[i % 3]
    accounts: list[str] = []
    # Most clinic patients already carry their clinic (a project that adopted the tool); every
    # fifth does not yet, and a few carry a wrong or the legacy account: the demo plan is a
    # realistic handful of changes, not a first assignment (which the grant guard would stop).
    if i % 3 == 0 and i % 5 != 0:
        accounts.append(ORG_NORTH)
    if i % 3 == 0 and i % 7 == 0:
        accounts.append(ORG_SOUTH)  # stale: not a Southside patient, the plan removes it
    if i % 3 == 1 and i % 5 != 0:
        accounts.append(ORG_SOUTH)
    if i % 3 == 2 and i % 13 == 0:
        accounts.append(ORG_NORTH)  # stale
    if i % 11 == 0:
        accounts.append(ORG_LEGACY)
    return accounts, gp


@dataclass(frozen=True)
class SeedResult:
    patients: int
    resources: int
    written: int


def demo_resources(patients: int, per_patient: int, seed: int) -> Iterator[Resource]:
    yield _org(ORG_NORTH, "Northside Clinic", "north")
    yield _org(ORG_SOUTH, "Southside Clinic", "south")
    yield _org(ORG_RESEARCH, "Cardiology Research Registry", "research")
    yield _org(ORG_LEGACY, "Legacy Billing Partner", None)
    for rid, name in ((DR_NORTH, "North"), (DR_SOUTH, "South")):
        yield {
            "resourceType": "Practitioner",
            "id": rid,
            "meta": {},
            "name": [{"family": name, "prefix": ["Dr."]}],
            "identifier": [{"system": STAFF_SYSTEM, "value": f"dr-{name.lower()}"}],
        }
    for rid, value, name, org in LOCATIONS:  # in no tenant yet: the examples add them
        yield {"resourceType": "Location", "id": rid, "meta": {}, "name": name,
               "identifier": [{"system": LOC_SYSTEM, "value": value}],
               "managingOrganization": {"reference": f"Organization/{org}"}}  # fmt: skip
    for rid, value, name, org in HEALTHCARE_SERVICES:
        yield {"resourceType": "HealthcareService", "id": rid, "meta": {}, "name": name,
               "identifier": [{"system": SERVICE_SYSTEM, "value": value}],
               "providedBy": {"reference": f"Organization/{org}"}}  # fmt: skip
    yield from staff_resources()
    concept_map = observation_status_concept_map()
    yield {**concept_map, "id": "0f1e0007-0000-4000-8000-000000000001", "meta": {}}
    for n, mrn, given, family, birth, accounts in NAMED_PATIENTS:
        pid = named_patient_id(n)
        yield _patient(pid, mrn, given, family, birth, accounts, None)
        yield from _compartment(pid, accounts, 3, f"named-{n}")
    for i in range(patients):
        pid = str(uuid.uuid5(NAMESPACE, f"gen-{seed}-{i}"))
        accounts, gp = generated_accounts(i)
        given = GIVENS[i % len(GIVENS)]
        family = FAMILIES[(i // len(GIVENS)) % len(FAMILIES)]
        birth = f"{1940 + i % 70:04d}-{1 + i % 12:02d}-{1 + i % 28:02d}"
        yield _patient(pid, f"G-{seed}-{i:06d}", given, family, birth, accounts, gp)
        yield from _compartment(pid, accounts, per_patient, f"gen-{seed}-{i}")


def seed(store: Store, *, patients: int = 100, per_patient: int = 4, seed: int = 1) -> SeedResult:
    total = 0
    written = 0
    batch: list[Resource] = []
    for resource in demo_resources(patients, per_patient, seed):
        batch.append(resource)
        total += 1
        if len(batch) >= 5000:
            written += store.bulk_insert(batch)
            batch = []
    if batch:
        written += store.bulk_insert(batch)
    return SeedResult(patients=patients + len(NAMED_PATIENTS), resources=total, written=written)
