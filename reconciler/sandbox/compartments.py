"""Which patients' compartments hold a resource, as Medplum decides it: every Patient reference
found at the R4 Patient CompartmentDefinition's params for the resource's type (Medplum's
`getPatients` evaluates each param's expression and keeps every patient found). So an
Appointment is in the compartment of each patient among its participants, an Observation in
its performer's too — not only the subject's: `_compartment=Patient/x` finds them, `meta.
compartment` lists them and `$set-accounts` propagates to them.

Each param is kept here as the element path its search expression reads (a dotted path; a
list anywhere along it is walked). A resource's top-level subject, patient and beneficiary
count for every type, as they did before this table."""

from __future__ import annotations

from typing import Any

Resource = dict[str, Any]

# Which references put a resource into a Patient's compartment whatever its type (the first
# of them is also where it inherits its accounts from: linked_patient).
PATIENT_LINK_FIELDS = ("subject", "patient", "beneficiary")

# Beyond subject/patient/beneficiary: type -> the paths of its other compartment params.
EXTRA_PATHS: dict[str, tuple[str, ...]] = {
    "AllergyIntolerance": ("recorder", "asserter"),
    "Appointment": ("participant.actor",),
    "AppointmentResponse": ("actor",),
    "AuditEvent": ("agent.who", "entity.what"),
    "Basic": ("author",),
    "CarePlan": ("activity.detail.performer",),
    "CareTeam": ("participant.member",),
    "Claim": ("payee.party",),
    "Communication": ("sender", "recipient"),
    "CommunicationRequest": ("sender", "recipient", "requester"),
    "Composition": ("author", "attester.party"),
    "Condition": ("asserter",),
    "Coverage": ("policyHolder", "subscriber", "payor"),
    "DeviceRequest": ("performer",),
    "DocumentManifest": ("author", "recipient"),
    "DocumentReference": ("author",),
    "ExplanationOfBenefit": ("payee.party",),
    "Group": ("member.entity",),
    "Invoice": ("recipient",),
    "List": ("source",),
    "MedicationAdministration": ("performer.actor",),
    "MedicationDispense": ("receiver",),
    "Observation": ("performer",),
    "Person": ("link.target",),
    "Procedure": ("performer.actor",),
    "Provenance": ("target",),
    "QuestionnaireResponse": ("author",),
    "RequestGroup": ("action.participant",),
    "ResearchSubject": ("individual",),
    "Schedule": ("actor",),
    "ServiceRequest": ("performer",),
}


# Each type's paths, split once: this runs for every resource a search renders.
_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    rtype: tuple(tuple(p.split(".")) for p in paths) for rtype, paths in EXTRA_PATHS.items()
}


def _at(value: Any, path: tuple[str, ...]) -> list[Any]:
    if isinstance(value, list):
        return [found for item in value for found in _at(item, path)]
    if not path:
        return [value]
    if not isinstance(value, dict):
        return []
    return _at(value.get(path[0]), path[1:])


def _patient(ref: Any) -> str | None:
    target = ref.get("reference") if isinstance(ref, dict) else None
    return target if isinstance(target, str) and target.startswith("Patient/") else None


def linked_patient(resource: Resource) -> str | None:
    """The patient a new or updated resource takes its accounts from (medplum-api.md, "Who
    sets accounts"): its subject, patient or beneficiary. Its compartments can be more
    (linked_patients)."""
    if resource.get("resourceType") == "Patient":
        return None
    return next(filter(None, (_patient(resource.get(f)) for f in PATIENT_LINK_FIELDS)), None)


def linked_patients(resource: Resource) -> list[str]:
    """The patients whose compartments hold `resource` (not the Patient itself), in order."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        return []
    found: list[str] = []
    for field in PATIENT_LINK_FIELDS:
        patient = _patient(resource.get(field))
        if patient and patient not in found:
            found.append(patient)
    for path in _PATHS.get(str(rtype), ()):
        if path[0] not in resource:
            continue
        for ref in _at(resource, path):
            patient = _patient(ref)
            if patient and patient not in found:
                found.append(patient)
    return found
