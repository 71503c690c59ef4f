"""`reconciler diff`: what a change to the manifests does, from the manifests alone (no server):
tenants added and removed, accounts, membership modes, selectors, grants and their members.
A pull request's review of the access half (design section 11): it needs no credential."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from reconciler.model import Grant, ManifestSet, Membership, Tenant

MODE_EFFECT = {
    Membership.AUTHORITATIVE: "patients the manifests do not select lose the account",
    Membership.ADDITIVE: "nothing is removed from patients any more",
}


class Status(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True)
class Line:
    sign: str  # "+" added, "-" removed, "~" changed
    text: str


@dataclass
class Counts:
    patients: list[int] = field(default_factory=lambda: [0, 0])
    resources: list[int] = field(default_factory=lambda: [0, 0])
    grants: list[int] = field(default_factory=lambda: [0, 0])
    members: list[int] = field(default_factory=lambda: [0, 0])


@dataclass(frozen=True)
class TenantDiff:
    name: str
    status: Status
    file: str
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class ManifestDiff:
    base: str
    tenants: tuple[TenantDiff, ...]
    counts: Counts

    @property
    def empty(self) -> bool:
        return not self.tenants

    def count(self, status: Status) -> int:
        return sum(1 for t in self.tenants if t.status is status)


def _grant_key(grant: Grant) -> tuple[str, str]:
    return grant.policy, grant.parameter


def _grant_name(grant: Grant) -> str:
    return f"{grant.policy} (%{grant.parameter})"


def _set_lines(
    noun: str, before: Iterable[str], after: Iterable[str], tally: list[int]
) -> list[Line]:
    old, new = list(dict.fromkeys(before)), list(dict.fromkeys(after))
    added = [Line("+", f"{noun} {v}") for v in new if v not in old]
    removed = [Line("-", f"{noun} {v}") for v in old if v not in new]
    tally[0] += len(added)
    tally[1] += len(removed)
    return added + removed


def _members(grant: Grant) -> list[str]:
    return [m.describe() for m in grant.members]


def _access_lines(before: Sequence[Grant], after: Sequence[Grant], counts: Counts) -> list[Line]:
    old = {_grant_key(g): g for g in before}
    new = {_grant_key(g): g for g in after}
    lines: list[Line] = []
    for key, grant in new.items():
        if key not in old:
            counts.grants[0] += 1
            lines.append(Line("+", f"access {_grant_name(grant)}: {len(grant.members)} members"))
            lines += _set_lines("  member", [], _members(grant), counts.members)
    for key, grant in old.items():
        if key not in new:
            counts.grants[1] += 1
            lines.append(Line("-", f"access {_grant_name(grant)}: its members lose this tenant"))
            lines += _set_lines("  member", _members(grant), [], counts.members)
    for key, grant in new.items():
        if key in old:
            moved = _set_lines("  member", _members(old[key]), _members(grant), counts.members)
            if moved:
                lines.append(Line("~", f"access {_grant_name(grant)}"))
                lines += moved
    return lines


def _tenant_lines(before: Tenant | None, after: Tenant, counts: Counts) -> list[Line]:
    lines: list[Line] = []
    if before is None:
        lines.append(
            Line(
                "+",
                f"account {after.account.describe()}, {after.membership.value}"
                + ("" if after.propagate else ", not propagated"),
            )
        )
    else:
        if before.account.describe() != after.account.describe():
            lines.append(
                Line("~", f"account {before.account.describe()} -> {after.account.describe()}")
            )
        if before.membership is not after.membership:
            lines.append(
                Line(
                    "~",
                    f"membership {before.membership.value} -> {after.membership.value} "
                    f"({MODE_EFFECT[after.membership]})",
                )
            )
        if before.propagate != after.propagate:
            lines.append(
                Line("~", f"propagate {str(before.propagate).lower()} -> "
                          f"{str(after.propagate).lower()}")
            )  # fmt: skip
    old_patients = [s.describe() for s in before.patients] if before else []
    lines += _set_lines(
        "patient", old_patients, [s.describe() for s in after.patients], counts.patients
    )
    old_resources = [s.describe() for s in before.resources] if before else []
    lines += _set_lines(
        "resource", old_resources, [s.describe() for s in after.resources], counts.resources
    )
    lines += _access_lines(before.access if before else (), after.access, counts)
    return lines


def diff_manifests(base: ManifestSet, head: ManifestSet, *, base_name: str) -> ManifestDiff:
    counts = Counts()
    old = {t.name: t for t in base.tenants}
    new = {t.name: t for t in head.tenants}
    out: list[TenantDiff] = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if after is None:
            assert before is not None
            counts.patients[1] += len(before.patients)
            counts.resources[1] += len(before.resources)
            counts.grants[1] += len(before.access)
            counts.members[1] += sum(len(g.members) for g in before.access)
            note = (
                f"tenant removed: its account {before.account.describe()} is no longer managed "
                "(nothing is removed from the server; its patients and members keep it)"
            )
            out.append(TenantDiff(name, Status.REMOVED, before.location.file, (Line("-", note),)))
            continue
        lines = _tenant_lines(before, after, counts)
        if before is None:
            out.append(TenantDiff(name, Status.ADDED, after.location.file, tuple(lines)))
        elif lines:
            out.append(TenantDiff(name, Status.CHANGED, after.location.file, tuple(lines)))
    return ManifestDiff(base_name, tuple(out), counts)
