"""`verify`: the compartment check, the access proof and what any repair did, as text."""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.apply.verification import Verification
from reconciler.apply.verify_access import (
    AccessCheck,
    EntryDrift,
    Mismatch,
    SeenCount,
    Unrestricted,
)
from reconciler.model import AccountInfo, Owners
from reconciler.plan.render import plural
from reconciler.views.output import Output

MAX_SHOWN = 50


def mismatch_line(item: Mismatch) -> str:
    """One line of drift, as `verify --access` prints it."""
    who = item.membership
    if isinstance(item, EntryDrift):
        if item.missing:
            return f"{who}: lacks {item.key.describe()} (tenant {item.tenant})"
        return f"{who}: holds {item.key.describe()}, which tenant {item.tenant} does not grant it"
    if isinstance(item, SeenCount):
        seen = plural(item.seen, item.resource_type)
        what = plural(2, item.resource_type).split(" ", 1)[1]
        if item.tenant is not None and item.via:
            if item.expected:  # some of them are its own tenants' too (a patient of both)
                return (
                    f"{who}: sees {seen} of tenant {item.tenant}, {item.expected:,} of them "
                    f"its own tenants' too; the rest through {item.via}"
                )
            return f"{who}: sees {seen} of tenant {item.tenant} through {item.via}"
        if item.tenant is not None:
            return f"{who}: sees {item.seen:,} of tenant {item.tenant}'s {item.expected:,} {what}"
        given = (
            f"the {what} of {', '.join(item.tenants)}" if item.tenants else "no tenant gives it any"
        )
        line = f"{who}: sees {seen} in all, expected {item.expected:,} ({given})"
        if item.via:
            line += f": {item.seen - item.expected:,} more through {item.via}"
        return line
    if isinstance(item, Unrestricted):
        if item.why == "no access policy":
            return f"{who}: has no access policy, so Medplum lets it see everything in the project"
        if item.why == "project admin":
            return (
                f"{who}: is a project admin: besides its tenants it can read and change every "
                "membership and access policy, its own included"
            )
        return f"{who}: sees every resource in the project through {item.why}"
    return f"{who}: could not be checked as the member: {item.reason}"


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


def _accounts(owners: Owners[AccountInfo], accounts: list[str]) -> str:
    return ", ".join(
        f"{a} (tenant {found[1].tenant})" if (found := owners.owner(a)) else a for a in accounts
    )


def verify_lines(result: Verification) -> Iterator[str]:
    check = result.compartments
    owners = Owners.of(check.managed)
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
    if check.orphans:
        yield (
            f"Found {plural(len(check.orphans), 'orphaned resource')}: they carry a tenant's "
            "account that no manifest gives them, so that tenant's staff can read them:"
        )
        for item in check.orphans[:MAX_SHOWN]:
            removed = [a for a in item.have if a not in item.want]
            whose = (
                f"({item.patient}): carries {_accounts(owners, removed)}, which its patient "
                "does not"
                if item.patient
                else f": carries {_accounts(owners, removed)}, which the tenant does not select"
            )
            yield f"  {item.resource} {whose}".replace(" :", ":")
        if len(check.orphans) > MAX_SHOWN:
            yield f"  ... and {len(check.orphans) - MAX_SHOWN} more"
    if check.drifted:
        yield (
            f"{plural(len(check.drifted), 'resource')} "
            f"{'holds' if len(check.drifted) == 1 else 'hold'} other accounts than the manifests "
            "give them: run reconciler apply (verify leaves them, and their compartments, alone):"
        )
        for change in check.drifted[:MAX_SHOWN]:
            parts = [f"+{a}" for a in change.add] + [f"-{a}" for a in change.remove]
            yield f"  {change.ref}: {' '.join(parts)}"
        if len(check.drifted) > MAX_SHOWN:
            yield f"  ... and {len(check.drifted) - MAX_SHOWN} more"
    for run in check.unfinished:
        if any(r.run == run.describe() for r in check.recovered):
            continue
        yield (
            f"An apply that did not finish left a journal ({run.describe()}, "
            f"{plural(len(run.written), 'resource')}): its writes were never checked for other "
            "writers' changes they overwrote; run reconciler apply (or verify --repair) to check "
            "them."
        )
    for done in check.recovered:
        yield (
            f"Checked a run that did not finish ({done.run}): "
            f"{plural(done.restored, 'unmanaged account')} another writer set put back, "
            f"{done.dropped} taken out again."
        )
        yield from (f"  could not check: {line}" for line in done.unchecked)
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
    if check.repaired is not None and check.to_repair:
        yield f"Repaired {check.repaired} of {len(check.to_repair)}."
        yield from (f"  {s.resource} ({s.patient}): {reason}" for s, reason in check.repair_errors)


class MarkdownVerifyView(VerifyView):
    """For a job summary: the same lines, in a block."""

    def result(self, result: Verification) -> None:
        lines = ["### Medplum tenancy: verify", "", "```text", *verify_lines(result), "```", ""]
        self.out.raw("\n".join(lines) + "\n")


VERIFY_VIEWS: dict[str, type[VerifyView]] = {"text": VerifyView, "markdown": MarkdownVerifyView}
