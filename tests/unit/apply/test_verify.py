"""apply/verify.py against the sandbox app: stragglers found in batches and repaired."""

from __future__ import annotations

from typing import Any

from reconciler.apply.verify import Expectation, find_orphans, find_stragglers, repair
from reconciler.medplum.client import MedplumClient
from reconciler.model import AccountInfo, Membership
from tests.integration.helpers import create_org, create_patients


def test_stragglers_found_in_batches_and_repaired(client: MedplumClient) -> None:
    org, old = create_org(client), create_org(client)
    a, b = create_patients(client, 2, compartment=3, accounts=[old])
    client.set_accounts(a, [org], propagate=True)  # a's compartment follows
    client.set_accounts(b, [org])  # b's does not: 3 stragglers still in `old`, not in `org`
    expect = Expectation(must_have=frozenset({org}), must_not=frozenset({old}))
    stragglers, read = find_stragglers(client, {a: expect, b: expect})
    assert read == 6
    assert {s.patient for s in stragglers} == {b} and len(stragglers) == 3
    assert all(s.have == (old,) and s.want == (org,) for s in stragglers)
    assert repair(client, stragglers, parallelism=2) == 3
    assert find_stragglers(client, {a: expect, b: expect}) == ([], 6)


def _appointment(rid: str, accounts: list[str], *patients: str) -> dict[str, object]:
    # In a patient's compartment through a field verification does not read
    # (Appointment.participant.actor): only meta.compartment says whose it is.
    return {
        "resourceType": "Appointment", "id": rid,
        "participant": [{"actor": {"reference": p}} for p in patients],
        "meta": {"accounts": [{"reference": a} for a in accounts],
                 "compartment": [{"reference": "Project/p"},
                                 *({"reference": a} for a in accounts),
                                 *({"reference": p} for p in patients)]},
    }  # fmt: skip


def test_a_straggler_linked_by_another_field_is_found_by_its_compartment(
    client: MedplumClient, monkeypatch: Any
) -> None:
    org, old = "Organization/new", "Organization/old"
    answer = [_appointment("1", [old], "Patient/a"), _appointment("2", [org], "Patient/a")]
    monkeypatch.setattr(client, "read_compartments", lambda refs, **kw: iter(answer))
    expect = Expectation(must_have=frozenset({org}), must_not=frozenset({old}))
    stragglers, read = find_stragglers(client, {"Patient/a": expect})
    assert read == 2
    assert [(s.resource, s.patient, s.have, s.want) for s in stragglers] == [
        ("Appointment/1", "Patient/a", (old,), (org,))
    ]


def test_an_orphan_linked_by_another_field_is_found_by_its_compartment(
    client: MedplumClient, monkeypatch: Any
) -> None:
    tenant = create_org(client)
    (patient,) = create_patients(client, 1)  # carries no tenant: the appointment should not
    answer = [_appointment("9", [tenant], patient)]
    monkeypatch.setattr(client, "read_compartments", lambda refs, **kw: iter(answer))
    managed = {tenant: AccountInfo("t", Membership.AUTHORITATIVE, True)}
    orphans, counts = find_orphans(client, managed, checked=[])
    assert counts == {tenant: 1}
    assert [(o.resource, o.patient, o.want, o.orphan) for o in orphans] == [
        ("Appointment/9", patient, (), True)
    ]
    assert find_orphans(client, managed, checked=[patient])[0] == []  # checked with its patient


def test_an_appointment_left_in_the_old_tenant_is_found_and_repaired(
    client: MedplumClient,
) -> None:
    # End to end on the sandbox, which now files an Appointment under its participants'
    # compartments as Medplum does: left behind by a move without propagation, it is found
    # through the patient's compartment and repaired.
    org, old = create_org(client), create_org(client)
    (patient,) = create_patients(client, 1, accounts=[old])
    appointment = client.create_resource(
        {"resourceType": "Appointment", "status": "booked", "meta": {"accounts": [{"reference": old}]},
         "participant": [{"actor": {"reference": patient}, "status": "accepted"}]}
    )  # fmt: skip
    client.set_accounts(patient, [org])  # no propagation: the appointment stays in `old`
    expect = Expectation(must_have=frozenset({org}), must_not=frozenset({old}))
    stragglers, read = find_stragglers(client, {patient: expect})
    assert read == 1
    assert [(s.resource, s.have, s.want) for s in stragglers] == [
        (f"Appointment/{appointment['id']}", (old,), (org,))
    ]
    assert repair(client, stragglers, parallelism=1) == 1
    assert find_stragglers(client, {patient: expect}) == ([], 1)
