"""manifest/diff.py: the pure comparison behind `reconciler diff`."""

from __future__ import annotations

from reconciler.manifest.diff import Line, Status, diff_manifests
from reconciler.model import (
    AccountRef,
    Grant,
    Location,
    ManifestSet,
    MemberKind,
    MemberSelector,
    Membership,
    ResourceSelector,
    SelectorKind,
    Tenant,
)

AT = Location("t.yaml", 1, 1)


def tenant(**changes: object) -> Tenant:
    fields: dict[str, object] = {
        "name": "north",
        "account": AccountRef(AT, reference="Organization/n"),
        "patients": (),
        "location": AT,
    }
    fields.update(changes)
    return Tenant(**fields)  # type: ignore[arg-type]


def manifests(*tenants: Tenant) -> ManifestSet:
    return ManifestSet(tenants=tenants, files=("t.yaml",), digest="")


def member(value: str) -> MemberSelector:
    return MemberSelector(MemberKind.PROFILE, value, AT)


def test_account_propagate_resources_and_whole_grants() -> None:
    staff = Grant("AccessPolicy/staff", "organization", (member("Practitioner/a"),), AT)
    audit = Grant(
        "AccessPolicy/audit", "org", (member("Practitioner/b"), member("Practitioner/c")), AT
    )
    before = tenant(access=(staff,), membership=Membership.ADDITIVE)
    after = tenant(
        account=AccountRef(AT, reference="Organization/n2"),
        propagate=False,
        membership=Membership.ADDITIVE,
        resources=(ResourceSelector(SelectorKind.IDENTIFIER, "Location", "urn:loc|N-1", AT),),
        access=(audit,),
    )
    diff = diff_manifests(manifests(before), manifests(after), base_name="main")
    (only,) = diff.tenants
    assert only.status is Status.CHANGED
    assert only.lines == (
        Line("~", "account Organization/n -> Organization/n2"),
        Line("~", "propagate true -> false"),
        Line("+", "resource Location identifier urn:loc|N-1"),
        Line("+", "access AccessPolicy/audit (%org): 2 members"),
        Line("+", "  member profile Practitioner/b"),
        Line("+", "  member profile Practitioner/c"),
        Line("-", "access AccessPolicy/staff (%organization): its members lose this tenant"),
        Line("-", "  member profile Practitioner/a"),
    )
    assert (diff.counts.grants, diff.counts.members, diff.counts.resources) == (
        [1, 1], [2, 1], [1, 0],
    )  # fmt: skip


def test_unchanged_tenants_and_descriptions_are_no_difference() -> None:
    same = diff_manifests(
        manifests(tenant(description="old")), manifests(tenant(description="new")), base_name="b"
    )
    assert same.empty and same.tenants == ()
