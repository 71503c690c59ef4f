"""The rules that need more than one document: names and accounts unique across files, no
selector or member listed twice, resource types that belong elsewhere, result-control
parameters hidden by percent-encoding; and `--target`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import parse_qsl

from reconciler.errors import ManifestError
from reconciler.manifest.explain import RESULT_CONTROL_PARAMS
from reconciler.medplum.compartment import PATIENT_COMPARTMENT_TYPES
from reconciler.model import (
    AccountRef,
    Location,
    ManifestSet,
    MemberKind,
    MemberSelector,
    ResourceSelector,
    SelectorKind,
    Tenant,
    account_id,
    id_selectors,
    other_selectors,
    selector_location,
)
from reconciler.suggest import did_you_mean


def _encoded_control_problems(tenant: Tenant) -> list[str]:
    """The schema sees `search` as typed; the server decodes it first. `%5Foffset=8` is
    `_offset=8` to Medplum: a result-control parameter hidden from the pattern, which would
    silently drop members from an authoritative tenant's scope. Decode, then check."""
    searches: list[tuple[str, str, Location]] = [
        (f"spec.patients[{i}].search", s.value, s.location)
        for i, s in enumerate(tenant.patients)
        if s.kind is SelectorKind.SEARCH
    ]
    searches += [
        (f"spec.resources[{i}].search", s.value, s.location)
        for i, s in enumerate(tenant.resources)
        if s.kind is SelectorKind.SEARCH
    ]
    searches += [
        (f"spec.access[{i}].members[{j}].search", m.value, m.location)
        for i, g in enumerate(tenant.access)
        for j, m in enumerate(g.members)
        if m.kind is MemberKind.SEARCH
    ]
    problems = []
    for field, query, location in searches:
        for key, _ in parse_qsl(query, keep_blank_values=True):
            if key.split(":", 1)[0] in RESULT_CONTROL_PARAMS:
                problems.append(
                    f"{location}: error: {field}: result-control parameter "
                    f"{key.split(':', 1)[0]!r} is not allowed in a search selector "
                    "(written percent-encoded)"
                )
    return problems


def _resource_type_problems(tenant: Tenant) -> list[str]:
    """Patients go under `patients`; Patient-compartment types follow their patient."""
    problems: list[str] = []
    for i, selector in enumerate(tenant.resources):
        where = f"{selector.location}: error: spec.resources[{i}]"
        if selector.type == "Patient":
            problems.append(f"{where}: Patient belongs under spec.patients, not spec.resources")
        elif selector.type in PATIENT_COMPARTMENT_TYPES:
            problems.append(
                f"{where}: {selector.type} is in the Patient compartment: it follows its "
                "patient's accounts (list the patient under spec.patients)"
            )
    return problems


def _account_key(account: AccountRef) -> str:
    """Literal accounts compare by id, as Medplum files compartments (model/accounts.py)."""
    if account.reference is not None:
        return "id:" + (account_id(account.reference) or account.reference)
    return f"{account.type}?identifier={account.identifier}"


def _account_type_problems(tenant: Tenant) -> list[str]:
    """A tenant's account is an Organization (or a Practitioner, …): a Patient or a type of
    the Patient compartment would make the tenant one patient's record."""
    account = tenant.account
    rtype = account.type if account.reference is None else account.reference.split("/", 1)[0]
    if rtype == "Patient" or rtype in PATIENT_COMPARTMENT_TYPES:
        return [
            f"{account.location}: error: spec.account: a tenant's account cannot be a {rtype} "
            "(a Patient or a type of the Patient compartment); use an Organization"
        ]
    return []


def _duplicate_members(tenant: Tenant) -> list[str]:
    """A member listed twice under one policy of one tenant is a mistake (design section 8)."""
    problems: list[str] = []
    seen: dict[tuple[str, str, MemberKind, str], MemberSelector] = {}
    for i, grant in enumerate(tenant.access):
        for j, member in enumerate(grant.members):
            key = (grant.policy, grant.parameter, member.kind, member.value)
            earlier = seen.setdefault(key, member)
            if earlier is not member:
                problems.append(
                    f"{member.location}: error: spec.access[{i}].members[{j}]: member "
                    f"{member.describe()!r} is listed twice under {grant.policy} in tenant "
                    f"{tenant.name!r} (first at line {earlier.location.line})"
                )
    return problems


def cross_file_problems(tenants: Sequence[Tenant]) -> list[str]:
    problems: list[str] = []
    names: dict[str, Tenant] = {}
    accounts: dict[str, Tenant] = {}
    for tenant in tenants:
        first = names.setdefault(tenant.name, tenant)
        if first is not tenant:
            problems.append(
                f"{tenant.location}: error: metadata.name: duplicate tenant name "
                f"{tenant.name!r} (first defined at {first.location.short})"
            )
        key = _account_key(tenant.account)
        owner = accounts.setdefault(key, tenant)
        if owner is not tenant:
            if _account_key(owner.account) == _account_key(tenant.account) and (
                owner.account.describe() != tenant.account.describe()
            ):
                problems.append(
                    f"{tenant.account.location}: error: spec.account: "
                    f"{tenant.account.describe()} has the id of tenant {owner.name!r}'s account "
                    f"{owner.account.describe()} ({owner.account.location.short}): Medplum "
                    "files compartments by id, so the two would be one tenant"
                )
            else:
                problems.append(
                    f"{tenant.account.location}: error: spec.account: account "
                    f"{tenant.account.describe()} is already declared by tenant "
                    f"{owner.name!r} ({owner.account.location.short})"
                )
        problems += _account_type_problems(tenant)
        problems += _duplicate_members(tenant)
        problems += _resource_type_problems(tenant)
        problems += _encoded_control_problems(tenant)
        seen_resources: dict[tuple[SelectorKind, str, str], ResourceSelector] = {}
        for i, rsel in enumerate(tenant.resources):
            first_at = seen_resources.setdefault((rsel.kind, rsel.type, rsel.value), rsel)
            if first_at is not rsel:
                problems.append(
                    f"{rsel.location}: error: spec.resources[{i}]: selector "
                    f"{rsel.describe()!r} is listed twice in tenant {tenant.name!r} "
                    f"(first at line {first_at.location.line})"
                )
        problems += _duplicate_patients(tenant)
    return problems


def _duplicate_patients(tenant: Tenant) -> list[str]:
    """A selector listed twice, in the order of the list; by-id ones read from the columns
    (a million-patient tenant: no Selector made, one dict entry each)."""
    found: list[tuple[int, str]] = []
    patients = tenant.patients

    def twice(i: int, shown: str, first: int) -> None:
        found.append((i, f"{selector_location(patients, i)}: error: spec.patients[{i}]: "
                         f"selector {shown!r} is listed twice in tenant {tenant.name!r} "
                         f"(first at line {selector_location(patients, first).line})"))  # fmt: skip

    first_id: dict[str, int] = {}
    for i, value in id_selectors(patients):
        first = first_id.setdefault(value, i)
        if first != i:
            twice(i, value, first)
    first_other: dict[tuple[SelectorKind, str], int] = {}
    for i, selector in other_selectors(patients):
        first = first_other.setdefault((selector.kind, selector.value), i)
        if first != i:
            twice(i, selector.describe(), first)
    return [text for _, text in sorted(found)]


def select_targets(manifests: ManifestSet, targets: Sequence[str]) -> ManifestSet:
    """`--target NAME` (repeatable): only these tenants are planned; the others' accounts are
    then unmanaged for this run — kept as they are — and their selectors are not resolved."""
    if not targets:
        return manifests
    names = {t.name for t in manifests.tenants}
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise ManifestError(
            [f"error: --target {name!r} is not a tenant of these manifests"
             f"{did_you_mean(name, names)} (tenants: {', '.join(sorted(names))})"
             for name in unknown]
        )  # fmt: skip
    return replace(manifests, tenants=tuple(t for t in manifests.tenants if t.name in targets))
