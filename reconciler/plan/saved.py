"""The checks a saved plan passes before `apply PLANFILE` writes anything: its signature (always:
plan/signing.py), that it holds together (plan/consistency.py), its age under CI, that the
manifests it was made from are here unchanged and give exactly its managed accounts, entries
and changes (re-derived against the live server), that its server is this one and nothing it
names moved since (staleness), and its guards recounted on live member counts."""

from __future__ import annotations

import hmac
from dataclasses import replace
from datetime import UTC, datetime

from reconciler.clock import parse_iso_utc
from reconciler.errors import ManifestError, PlanFileError
from reconciler.manifest import load_manifests, select_targets
from reconciler.medplum.client import MedplumClient
from reconciler.model import AccessChange, Change, ManifestSet, Plan
from reconciler.plan.build import build_plan
from reconciler.plan.consistency import inconsistencies
from reconciler.plan.guard import guards_from_counts
from reconciler.plan.jsonform import plan_digest
from reconciler.plan.planfile import load_plan
from reconciler.plan.records import read_memberships, read_resources
from reconciler.plan.signing import KEY_VARIABLE, in_ci, plan_key, sign
from reconciler.plan.versions import SINCE_PLAN, moved

MAX_SHOWN = 10


def load_saved_plan(path: str, *, max_age_s: float | None = None) -> Plan:
    """Load (schema, digest), check that the plan holds together, its signature and its age."""
    plan = load_plan(path)
    check_consistent(plan, path)
    check_signature(plan, path)
    check_age(plan, path, max_age_s)
    return plan


def check_signature(plan: Plan, path: str) -> None:
    """Only a plan signed with this user's (or CI's) key is applied: anyone who can edit the
    file can recompute its digest, not its signature."""
    if not plan.signature:  # said before any key is looked for: no key would help
        raise PlanFileError(f"{path}: the plan is not signed; nothing was changed")
    try:
        key = plan_key(create=False, purpose="applying a saved plan")
    except PlanFileError as exc:  # the plan file is named, like every other refusal of it
        raise PlanFileError(f"{path}: {exc}") from None
    expected = sign(plan_digest(plan), key.key)
    if not hmac.compare_digest(plan.signature, expected):
        which = KEY_VARIABLE if key.source == KEY_VARIABLE else f"the key {key.source}"
        raise PlanFileError(
            f"{path}: the plan's signature does not match {which}: it was edited, or signed "
            "with another key; nothing was changed"
        )


def check_age(plan: Plan, path: str, max_age_s: float | None) -> None:
    """Under CI, a plan older than --max-plan-age (default 24h) is refused: the review it had
    is about a server that has had a day to move."""
    if max_age_s is None or not in_ci():
        return
    try:
        made = parse_iso_utc(plan.created_at)
    except ValueError:
        raise PlanFileError(
            f"{path}: the plan's created_at is unreadable; nothing was changed"
        ) from None
    age = (datetime.now(UTC) - made).total_seconds()
    if age > max_age_s:
        raise PlanFileError(
            f"{path}: the plan is {age / 3600:.1f} h old, more than --max-plan-age "
            f"{max_age_s / 3600:g} h; plan again; nothing was changed"
        )


def tied_manifests(plan: Plan, path: str, given: tuple[str, ...]) -> ManifestSet:
    """The manifests the plan was made from: `--manifests`, else the files it records (from
    the working directory), with the very digest it records."""
    paths = given or plan.manifest_files
    where = ", ".join(paths) or "(none recorded)"
    try:
        manifests = select_targets(load_manifests(list(paths)), plan.targets)
    except ManifestError as exc:
        raise PlanFileError(
            f"{path}: apply PLANFILE needs the manifests the plan was made from ({where}): "
            f"{exc.problems[0]}; give them with --manifests PATH; nothing was changed"
        ) from None
    if manifests.digest != plan.manifest_digest:
        raise PlanFileError(
            f"{path}: the manifests ({where}) are not the ones the plan was made from (digest "
            f"{manifests.digest[:19]}…, the plan's {plan.manifest_digest[:19]}…); plan again; "
            "nothing was changed"
        )
    return manifests


def _shape(change: Change) -> tuple[object, ...]:
    return change.before, change.after, change.steps


def _access_shape(change: AccessChange) -> tuple[object, ...]:
    return change.before, change.after, change.steps


def check_derived(saved: Plan, fresh: Plan, path: str) -> None:
    """The saved plan must be what its manifests give on this server now: the same managed
    accounts and entries, and each of its changes exactly the change re-planned for it."""
    problems: list[str] = []
    if saved.managed != fresh.managed:
        problems.append("its managed accounts are not the manifests'")
    if set(saved.managed_access) != set(fresh.managed_access):
        problems.append("its managed access entries are not the manifests'")
    now = {c.ref: c for c in (*fresh.changes, *fresh.resource_changes)}
    for change in (*saved.changes, *saved.resource_changes):
        again = now.get(change.ref)
        if again is None or _shape(again) != _shape(change):
            problems.append(f"{change.ref}: not the change its manifests give it")
    members = {c.membership: c for c in fresh.access_changes}
    for member in saved.access_changes:
        redone = members.get(member.membership)
        if redone is None or _access_shape(redone) != _access_shape(member):
            problems.append(f"{member.membership}: not the change its manifests give it")
    if problems:
        shown = problems[:MAX_SHOWN]
        more = len(problems) - len(shown)
        raise PlanFileError(
            f"{path}: the plan does not follow from its manifests: "
            + "; ".join(shown)
            + (f"; and {more} more" if more > 0 else "")
            + "; nothing was changed"
        )


def check_consistent(plan: Plan, path: str) -> None:
    problems = inconsistencies(plan)
    if problems:
        shown = problems[:MAX_SHOWN]
        more = len(problems) - len(shown)
        raise PlanFileError(
            f"{path}: the plan does not hold together, so it was edited: "
            + "; ".join(shown)
            + (f"; and {more} more" if more > 0 else "")
            + "; nothing was changed"
        )


def check_server(identity: str, plan: Plan, path: str) -> None:
    """Checked before the lock is taken: nothing is written to a server the plan is not for."""
    if plan.server != identity:
        raise PlanFileError(
            f"{path}: the plan was made for server {plan.server}, but this run talks to "
            f"{identity}; nothing was changed"
        )


def check_fresh(client: MedplumClient, identity: str, plan: Plan, path: str) -> None:
    """Same server, and nothing the plan names moved since it was made."""
    check_server(identity, plan, path)
    fresh = read_resources(client, [c.ref for c in (*plan.changes, *plan.resource_changes)])
    memberships = read_memberships(client, [c.membership for c in plan.access_changes])
    stale = []
    for access in plan.access_changes:
        now = memberships.get(access.membership)
        reason = moved(access.version_id, now.version_id if now else None, since=SINCE_PLAN)
        if reason:
            stale.append(f"{access.membership} {reason}")
    for change in (*plan.changes, *plan.resource_changes):
        current = fresh.get(change.ref)
        reason = moved(change.version_id, current.version_id if current else None, since=SINCE_PLAN)
        if reason:
            stale.append(f"{change.ref} {reason}")
    if stale:
        more = len(stale) - MAX_SHOWN
        lines = stale[:MAX_SHOWN] + ([f"... and {more} more"] if more > 0 else [])
        raise PlanFileError(
            "saved plan is stale: " + "\n  ".join(lines) + "\nNothing was changed; run plan again."
        )


def recount_guards(client: MedplumClient, plan: Plan) -> Plan:
    """Re-run the guards of a saved plan on what it will write and the live member counts."""
    members: dict[tuple[str, bool], int] = {}
    resource_types = sorted({c.type for c in plan.resource_changes})
    for account in plan.managed:
        members[(account, False)] = client.count("Patient", [("_compartment", account)])
        members[(account, True)] = sum(
            client.count(t, [("_compartment", account)]) for t in resource_types
        )
    removals, grants = guards_from_counts(plan, members)
    return replace(plan, mass_removals=removals, mass_grants=grants)


def trusted_saved_plan(
    client: MedplumClient,
    identity: str,
    plan: Plan,
    path: str,
    manifests: ManifestSet,
    *,
    parallelism: int = 1,
) -> Plan:
    """Everything a saved plan must be before it is shown and applied, against the server:
    fresh, derived from its manifests, its guards recounted. Returns the plan to apply."""
    check_fresh(client, identity, plan, path)
    fresh, _ = build_plan(
        client, identity, manifests, parallelism=parallelism, targets=plan.targets
    )
    check_derived(plan, fresh, path)
    return recount_guards(client, plan)
