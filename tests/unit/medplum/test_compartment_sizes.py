"""compartment_sizes: what each `$set-accounts` with propagate will touch, from one search."""

from __future__ import annotations

from typing import Any

from reconciler.medplum.client import MedplumClient
from tests.integration.helpers import create_org, create_patients


def test_a_resource_counts_for_every_asked_patient_its_compartment_names(
    client: MedplumClient, monkeypatch: Any
) -> None:
    # What Medplum answers: meta.compartment (extended mode) lists the patients a resource
    # belongs to, whatever field links it; propagation touches it for each of them.
    answer = [
        {"resourceType": "Observation", "id": "1", "subject": {"reference": "Patient/a"},
         "meta": {"compartment": [{"reference": "Project/p"}, {"reference": "Organization/o"},
                                  {"reference": "Patient/a"}]}},
        # linked by a field we do not read (Appointment.participant): still in the compartment
        {"resourceType": "Appointment", "id": "2",
         "meta": {"compartment": [{"reference": "Patient/a"}, {"reference": "Patient/b"}]}},
        # a server that shows no compartment: the subject says whose it is
        {"resourceType": "Observation", "id": "3", "subject": {"reference": "Patient/b"},
         "meta": {}},
        {"resourceType": "Observation", "id": "4",
         "meta": {"compartment": [{"reference": "Patient/not-asked"}]}},
    ]  # fmt: skip
    monkeypatch.setattr(client, "read_compartments", lambda refs, **kw: iter(answer))
    assert client.compartment_sizes(["Patient/a", "Patient/b", "Patient/c"]) == {
        "Patient/a": 2, "Patient/b": 2, "Patient/c": 0,
    }  # fmt: skip


def test_sizes_read_from_the_sandbox_match_what_was_created(client: MedplumClient) -> None:
    create_org(client)
    small, large, empty = (
        create_patients(client, 1, compartment=2)
        + create_patients(client, 1, compartment=5)
        + create_patients(client, 1)
    )
    assert client.compartment_sizes([small, large, empty]) == {small: 2, large: 5, empty: 0}


def test_patients_of_reads_the_compartment_first_then_the_links() -> None:
    from reconciler.medplum.compartment import patients_of

    listed = {"meta": {"compartment": [{"reference": "Project/p"}, {"reference": "Patient/b"},
                                       {"reference": "Organization/o"}, {"reference": "Patient/a"},
                                       {"reference": "Patient/b"}]},
              "subject": {"reference": "Patient/z"}}  # fmt: skip
    assert patients_of(listed) == ["Patient/b", "Patient/a"]  # the server's order, once each
    assert patients_of({"meta": {}, "patient": {"reference": "Patient/c"}}) == ["Patient/c"]
    assert patients_of({"subject": {"reference": "Group/g"}}) == []
    assert patients_of({"meta": {"compartment": "junk"}}) == []
