"""sandbox/compartments.py: a resource is in the compartment of every patient found at its
type's Patient CompartmentDefinition params, as Medplum's getPatients decides."""

from __future__ import annotations

from reconciler.sandbox.compartments import linked_patients


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def test_every_patient_at_the_types_params_in_order_once() -> None:
    observation = {"resourceType": "Observation", "subject": ref("Patient/a"),
                   "performer": [ref("Practitioner/p"), ref("Patient/b"), ref("Patient/a")]}  # fmt: skip
    assert linked_patients(observation) == ["Patient/a", "Patient/b"]
    group = {"resourceType": "Group", "member": [{"entity": ref("Patient/c")},
                                                 {"entity": ref("Device/d")}]}  # fmt: skip
    assert linked_patients(group) == ["Patient/c"]
    care_team = {"resourceType": "CareTeam", "subject": ref("Patient/a"),
                 "participant": [{"member": ref("Patient/e")}, {"role": []}]}  # fmt: skip
    assert linked_patients(care_team) == ["Patient/a", "Patient/e"]
    plan = {"resourceType": "CarePlan",
            "activity": [{"detail": {"performer": [ref("Patient/f")]}}, {"detail": {}}]}  # fmt: skip
    assert linked_patients(plan) == ["Patient/f"]


def test_only_the_types_own_params_and_never_the_patient_itself() -> None:
    # Task is never in a patient's compartment; its `owner` is no param of any definition.
    assert linked_patients({"resourceType": "Task", "owner": ref("Patient/a")}) == []
    # A field that is another type's param does not count here (performer: Observation's).
    assert linked_patients({"resourceType": "Encounter", "performer": [ref("Patient/a")]}) == []
    assert (
        linked_patients({"resourceType": "Patient", "id": "a", "subject": ref("Patient/b")}) == []
    )
    assert linked_patients({"resourceType": "Provenance", "target": "not a reference"}) == []
