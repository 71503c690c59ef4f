"""Resource types of the FHIR R4 Patient CompartmentDefinition (hl7.org/fhir/R4/
compartmentdefinition-patient.html), minus Patient itself, for batched compartment reads."""

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
