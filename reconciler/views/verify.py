"""`verify`: the compartment check, the access proof and what any repair did, as text."""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.apply.verification import Verification
from reconciler.apply.verify_access import AccessCheck, EntryDrift, Mismatch, SeenCount
from reconciler.plan.render import plural
from reconciler.views.output import Output

MAX_SHOWN = 50


def mismatch_line(item: Mismatch) -> str:
    """One line of drift, as `verify --access` prints it."""
    if isinstance(item, EntryDrift):
        if item.missing:
            return f"{item.membership}: lacks {item.key.describe()} (tenant {item.tenant})"
        return (
            f"{item.membership}: holds {item.key.describe()}, which tenant {item.tenant} does "
            "not grant it"
        )
    if isinstance(item, SeenCount):
        what = plural(2, item.resource_type).split(" ", 1)[1].lower()
        if item.tenant is not None:
            return (
                f"{item.membership}: sees {item.seen:,} of tenant {item.tenant}'s "
                f"{item.expected:,} {what}"
            )
        return (
            f"{item.membership}: sees {item.seen:,} {what} in all, expected {item.expected:,} "
            f"(the {what} of {', '.join(item.tenants)})"
        )
    return f"{item.membership}: could not be checked as the member: {item.reason}"


def access_lines(check: AccessCheck) -> Iterator[str]:
    count = len(check.mismatches)
    yield (
        f"Checked access of {plural(check.memberships, 'membership')} to "
        f"{plural(check.tenants, 'tenant')}: {count:,} mismatch{'' if count == 1 else 'es'}."
    )
    yield from (f"  {mismatch_line(m)}" for m in check.mismatches)


class VerifyView:
    def __init__(self) -> None:
        self.out = Output()

    def result(self, result: Verification) -> None:
        self.out.results(verify_lines(result))


def verify_lines(result: Verification) -> Iterator[str]:
    check = result.compartments
    stragglers = check.stragglers
    patients = len({s.patient for s in stragglers})
    yield (
        f"Checked {plural(check.read, 'compartment resource')} of "
        f"{plural(check.patients, 'patient')}: {plural(len(stragglers), 'resource')} of "
        f"{plural(patients, 'patient')} out of step."
    )
    yield from (
        f"  {s.resource} ({s.patient}): has {list(s.have)}, should have {list(s.want)}"
        for s in stragglers[:MAX_SHOWN]
    )
    if len(stragglers) > MAX_SHOWN:
        yield f"  ... and {len(stragglers) - MAX_SHOWN} more"
    if result.access is not None:
        yield from access_lines(result.access)
    repaired = result.access_repair
    if repaired is not None:
        yield (
            f"Repaired access of {repaired.updated} of {plural(repaired.planned, 'membership')}: "
            f"{plural(repaired.granted, 'grant')} added, {plural(repaired.revoked, 'grant')} "
            "revoked."
        )
        yield from (f"  {membership}: {reason}" for membership, reason in repaired.failed)
        yield from (f"  still: {mismatch_line(m)}" for m in repaired.still)
    if check.repaired is not None:
        yield f"Repaired {check.repaired} of {len(stragglers)}."
        yield from (f"  {s.resource} ({s.patient}): {reason}" for s, reason in check.repair_errors)


VERIFY_VIEWS: dict[str, type[VerifyView]] = {"text": VerifyView}
