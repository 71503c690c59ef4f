"""Is an AccessPolicy tenant-scoped? Judged by what it grants, not by its text (design section
11): a policy may be granted through a tenant only if

- its `compartment` is `%NAME` (what its members create goes into the tenant), and
- every `resource` rule either has criteria restricting it to `_compartment=%NAME` (the value
  `%NAME`, `%NAME.id` or `Type/%NAME.id`, as a whole token: `%o` is not inside
  `%organization`), or names a type that holds no patient data and is marked `readonly`.

Pure: the input is the policy's JSON. Rules are counted from 1, as a person reads them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

# Types that hold no patient data: definitions, directories and terminology. Granting them
# read-only without criteria shows every tenant's staff directory and forms, never a patient's
# record. Everything else (Patient and every type of the Patient compartment, but also Basic,
# Communication, DocumentReference …) needs the tenant's criteria.
NO_PATIENT_DATA = frozenset(
    {
        "ActivityDefinition", "CapabilityStatement", "CodeSystem", "ConceptMap", "Endpoint",
        "HealthcareService", "Library", "Location", "Measure", "Medication",
        "MedicationKnowledge", "NamingSystem", "ObservationDefinition", "OperationDefinition",
        "Organization", "PlanDefinition", "Practitioner", "PractitionerRole", "Questionnaire",
        "SearchParameter", "SpecimenDefinition", "StructureDefinition", "Substance",
        "ValueSet",
    }
)  # fmt: skip


TYPE = re.compile(r"[A-Z][A-Za-z]+")


def _is_tenant_reference(value: str, name: str) -> bool:
    """`%name` (the account's reference) or `Type/%name.id` — the tenant's account."""
    if value == f"%{name}":
        return True
    rtype, _, rest = value.partition("/")
    return rest == f"%{name}.id" and TYPE.fullmatch(rtype) is not None


def is_tenant_value(value: str, name: str) -> bool:
    """A `_compartment` value naming the tenant: its reference, or its id (`%name.id`)."""
    return value == f"%{name}.id" or _is_tenant_reference(value, name)


def _restricted(criteria: str, rtype: str, name: str) -> bool:
    query = criteria.split("?", 1)[1] if "?" in criteria else ""
    if not criteria.startswith(f"{rtype}?"):
        return False
    return any(
        key == "_compartment" and is_tenant_value(value, name)
        for key, value in parse_qsl(query, keep_blank_values=True)
    )


def scope_problems(policy: Mapping[str, Any], name: str) -> list[str]:
    """Why `policy` would grant more than the tenant whose account `%name` becomes; [] when it
    is tenant-scoped."""
    ref = f"AccessPolicy/{policy.get('id', '?')}"
    problems: list[str] = []
    compartment = policy.get("compartment")
    value = compartment.get("reference") if isinstance(compartment, Mapping) else None
    if not isinstance(value, str) or not _is_tenant_reference(value, name):
        shown = repr(value) if isinstance(value, str) else "none"
        problems.append(
            f"{ref} has compartment {shown}, not %{name}: what its members create would not "
            "go into the tenant"
        )
    for index, rule in enumerate(policy.get("resource") or [], start=1):
        if not isinstance(rule, Mapping):
            continue
        rtype = str(rule.get("resourceType") or "?")
        criteria = rule.get("criteria")
        where = f"{ref} rule {index} ({rtype})"
        if rtype == "*":
            problems.append(f"{where} grants every resource in the project, whatever the tenant")
        elif isinstance(criteria, str) and criteria:
            if not _restricted(criteria, rtype, name):
                problems.append(
                    f"{where} criteria {criteria!r} are not restricted to "
                    f"_compartment=%{name}: it grants {rtype} resources of every tenant"
                )
        elif rtype in NO_PATIENT_DATA:
            if not rule.get("readonly"):
                problems.append(
                    f"{where} lets members change every {rtype} in the project, whatever the "
                    f"tenant (mark it readonly, or restrict it to _compartment=%{name})"
                )
        else:
            problems.append(f"{where} grants every {rtype} in the project, whatever the tenant")
    return problems
