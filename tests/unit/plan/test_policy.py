"""plan/policy.py: a tenant policy is judged by what it grants — a table of policies."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.plan.policy import scope_problems

SCOPED = {"reference": "%organization"}


def policy(*rules: dict[str, Any], compartment: Any = SCOPED, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "AccessPolicy", "id": "p", "resource": list(rules)}
    if compartment is not None:
        body["compartment"] = compartment
    return {**body, **extra}


def rule(rtype: str, criteria: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"resourceType": rtype, **({"criteria": criteria} if criteria else {}), **extra}


TENANT_SCOPED = [
    policy(rule("Patient", "Patient?_compartment=%organization")),
    policy(rule("Observation", "Observation?_compartment=%organization.id&status=final")),
    policy(rule("Encounter", "Encounter?_compartment=Organization/%organization.id")),
    policy(rule("Practitioner", readonly=True), rule("Location", readonly=True)),
    policy(compartment={"reference": "Organization/%organization.id"}),
    policy(),  # grants nothing at all
]

NOT_SCOPED = [
    (policy(rule("Observation")),
     "AccessPolicy/p rule 1 (Observation) grants every Observation in the project, whatever "
     "the tenant"),
    (policy(rule("Patient", "Patient?_compartment=%organization"), rule("*")),
     "AccessPolicy/p rule 2 (*) grants every resource in the project, whatever the tenant"),
    (policy(rule("Patient", "Patient?name=Smith")),
     "AccessPolicy/p rule 1 (Patient) criteria 'Patient?name=Smith' are not restricted to "
     "_compartment=%organization: it grants Patient resources of every tenant"),
    (policy(rule("Patient", "Patient?_compartment=%organization,Organization/other")),
     "AccessPolicy/p rule 1 (Patient) criteria 'Patient?_compartment=%organization,"
     "Organization/other' are not restricted to _compartment=%organization: it grants "
     "Patient resources of every tenant"),
    (policy(rule("Patient", "Observation?_compartment=%organization")),
     "AccessPolicy/p rule 1 (Patient) criteria 'Observation?_compartment=%organization' are "
     "not restricted to _compartment=%organization: it grants Patient resources of every "
     "tenant"),
    (policy(rule("Patient", "Patient?_compartment=%organizationUnit")),
     "AccessPolicy/p rule 1 (Patient) criteria 'Patient?_compartment=%organizationUnit' are "
     "not restricted to _compartment=%organization: it grants Patient resources of every "
     "tenant"),
    (policy(rule("Practitioner")),
     "AccessPolicy/p rule 1 (Practitioner) lets members change every Practitioner in the "
     "project, whatever the tenant (mark it readonly, or restrict it to "
     "_compartment=%organization)"),
    (policy(rule("Basic", readonly=True)),
     "AccessPolicy/p rule 1 (Basic) grants every Basic in the project, whatever the tenant"),
    (policy(compartment=None),
     "AccessPolicy/p has compartment none, not %organization: what its members create would "
     "not go into the tenant"),
    (policy(compartment={"reference": "Organization/fixed"}),
     "AccessPolicy/p has compartment 'Organization/fixed', not %organization: what its members "
     "create would not go into the tenant"),
    # Mentioning %organization only in its name grants the same whatever the tenant.
    (policy(rule("Patient"), name="%organization staff"),
     "AccessPolicy/p rule 1 (Patient) grants every Patient in the project, whatever the tenant"),
]  # fmt: skip


@pytest.mark.parametrize("body", TENANT_SCOPED)
def test_tenant_scoped_policies_pass(body: dict[str, Any]) -> None:
    assert scope_problems(body, "organization") == []


@pytest.mark.parametrize(("body", "problem"), NOT_SCOPED)
def test_each_way_a_policy_grants_more_than_its_tenant_is_named(
    body: dict[str, Any], problem: str
) -> None:
    assert scope_problems(body, "organization") == [problem]


def test_the_parameter_is_matched_as_a_whole_token() -> None:
    # `%o` is inside `%organization`: a policy written for %organization is not scoped by %o.
    body = policy(rule("Patient", "Patient?_compartment=%organization"))
    assert scope_problems(body, "o") == [
        "AccessPolicy/p has compartment '%organization', not %o: what its members create would "
        "not go into the tenant",
        "AccessPolicy/p rule 1 (Patient) criteria 'Patient?_compartment=%organization' are not "
        "restricted to _compartment=%o: it grants Patient resources of every tenant",
    ]
