"""Resource types of the FHIR R4 Patient CompartmentDefinition (hl7.org/fhir/R4/
compartmentdefinition-patient.html), minus Patient itself, for batched compartment reads, and
which patients a compartment resource belongs to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PATIENT_COMPARTMENT_TYPES: tuple[str, ...] = (
    "Account", "AdverseEvent", "AllergyIntolerance", "Appointment", "AppointmentResponse",
    "AuditEvent", "Basic", "BodyStructure", "CarePlan", "CareTeam", "ChargeItem", "Claim",
    "ClaimResponse", "ClinicalImpression", "Communication", "CommunicationRequest",
    "Composition", "Condition", "Consent", "Coverage", "CoverageEligibilityRequest",
    "CoverageEligibilityResponse", "DetectedIssue", "DeviceRequest", "DeviceUseStatement",
    "DiagnosticReport", "DocumentManifest", "DocumentReference", "Encounter",
    "EnrollmentRequest", "EpisodeOfCare", "ExplanationOfBenefit", "FamilyMemberHistory", "Flag",
    "Goal", "Group", "ImagingStudy", "Immunization", "ImmunizationEvaluation",
    "ImmunizationRecommendation", "Invoice", "List", "MeasureReport", "Media",
    "MedicationAdministration", "MedicationDispense", "MedicationRequest",
    "MedicationStatement", "MolecularSequence", "NutritionOrder", "Observation", "Person",
    "Procedure", "Provenance", "QuestionnaireResponse", "RelatedPerson", "RequestGroup",
    "ResearchSubject", "RiskAssessment", "Schedule", "ServiceRequest", "Specimen",
    "SupplyDelivery", "SupplyRequest", "VisionPrescription",
)  # fmt: skip

# Fields that link a compartment resource to its patient (Observation.subject,
# AllergyIntolerance.patient, Coverage.beneficiary, …): what verification reads back.
PATIENT_LINK_FIELDS: tuple[str, ...] = ("subject", "patient", "beneficiary")


def patients_of(resource: Mapping[str, Any]) -> list[str]:
    """The patients whose compartments hold `resource`, in the server's order: those its
    `meta.compartment` lists — what `_compartment` matched and what `$set-accounts` propagates
    to, whichever field links them (an Appointment's participant, an Observation's performer;
    Medplum shows it with `X-Medplum: extended`) — else the one its subject, patient or
    beneficiary names (a server that shows no compartment)."""
    meta = resource.get("meta")
    listed = meta.get("compartment") if isinstance(meta, Mapping) else None
    if isinstance(listed, list) and listed:
        refs = [c.get("reference") for c in listed if isinstance(c, Mapping)]
        found = [r for r in refs if isinstance(r, str) and r.startswith("Patient/")]
        return list(dict.fromkeys(found))
    for field in PATIENT_LINK_FIELDS:
        link = resource.get(field)
        ref = link.get("reference") if isinstance(link, Mapping) else None
        if isinstance(ref, str) and ref.startswith("Patient/"):
            return [ref]
    return []
