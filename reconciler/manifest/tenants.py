"""A schema-valid YAML document → a Tenant, every selector with its file:line:column."""

from __future__ import annotations

from typing import Any

from reconciler.model import (
    AccountRef,
    Grant,
    Location,
    MemberKind,
    MemberSelector,
    Membership,
    PatientSelectors,
    ResourceSelector,
    SelectorKind,
    Tenant,
)
from reconciler.yamlsafe import Document, PathKey


def _loc(file: str, doc: Document, path: PathKey) -> Location:
    line, column = doc.position(path)
    return Location(file, line, column)


def to_tenant(file: str, doc: Document) -> Tenant:
    data = doc.data
    spec = data["spec"]
    account_raw = spec["account"]
    account_loc = _loc(file, doc, ("spec", "account"))
    if isinstance(account_raw, str):
        account = AccountRef(location=account_loc, reference=account_raw)
    else:
        account = AccountRef(
            location=account_loc,
            identifier=account_raw["identifier"],
            type=account_raw["type"],
        )
    selectors = PatientSelectors(file)
    for i, entry in enumerate(spec.get("patients") or []):
        line, column = doc.position(("spec", "patients", i))
        if isinstance(entry, str):
            selectors.append(SelectorKind.ID, entry, line, column)
        elif "identifier" in entry:
            selectors.append(SelectorKind.IDENTIFIER, entry["identifier"], line, column)
        else:
            selectors.append(SelectorKind.SEARCH, entry["search"].lstrip("?"), line, column)
    return Tenant(
        name=data["metadata"]["name"],
        description=data["metadata"].get("description"),
        account=account,
        membership=Membership(spec.get("membership", "authoritative")),
        propagate=bool(spec.get("propagate", True)),
        patients=selectors,
        location=_loc(file, doc, ("metadata", "name")),
        access=tuple(_grant(file, doc, i, g) for i, g in enumerate(spec.get("access") or [])),
        resources=tuple(
            _resource(file, doc, i, r) for i, r in enumerate(spec.get("resources") or [])
        ),
    )


def _resource(file: str, doc: Document, index: int, raw: Any) -> ResourceSelector:
    loc = _loc(file, doc, ("spec", "resources", index))
    if isinstance(raw, str):
        return ResourceSelector(SelectorKind.ID, raw.split("/", 1)[0], raw, loc)
    if "identifier" in raw:
        return ResourceSelector(SelectorKind.IDENTIFIER, raw["type"], raw["identifier"], loc)
    rtype, _, query = raw["search"].partition("?")
    return ResourceSelector(SelectorKind.SEARCH, rtype, query, loc)


def _grant(file: str, doc: Document, index: int, raw: dict[str, Any]) -> Grant:
    members: list[MemberSelector] = []
    for j, entry in enumerate(raw["members"]):
        loc = _loc(file, doc, ("spec", "access", index, "members", j))
        if isinstance(entry, str):
            members.append(MemberSelector(MemberKind.ID, entry, loc))
        else:
            (key, value), *_ = entry.items()
            members.append(MemberSelector(MemberKind(key), value.lstrip("?"), loc))
    return Grant(
        policy=raw["policy"],
        parameter=raw.get("parameter", "organization"),
        members=tuple(members),
        location=_loc(file, doc, ("spec", "access", index)),
    )
