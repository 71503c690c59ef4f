"""The checks a saved plan passes before `apply PLANFILE` writes anything: its signature, that
it holds together (re-derived, plan/consistency.py), that its server is this one and nothing it
names moved since (staleness), and its guards recounted on live member counts."""

from __future__ import annotations

import hmac
import os
from dataclasses import replace

from reconciler.errors import PlanFileError
from reconciler.medplum.client import MedplumClient
from reconciler.model import Plan
from reconciler.plan.consistency import inconsistencies
from reconciler.plan.guard import guards_from_counts
from reconciler.plan.jsonform import plan_digest, sign
from reconciler.plan.planfile import load_plan
from reconciler.plan.records import read_memberships, read_resources
from reconciler.plan.versions import SINCE_PLAN, moved

PLAN_KEY = "RECONCILER_PLAN_KEY"
MAX_SHOWN = 10


def load_saved_plan(path: str) -> Plan:
    """Load (schema, digest), check the signature and that the plan holds together."""
    plan = load_plan(path)
    check_signature(plan, path)
    check_consistent(plan, path)
    return plan


def check_signature(plan: Plan, path: str) -> None:
    """With RECONCILER_PLAN_KEY, only a plan signed with it is applied; under CI=true a saved
    plan is applied only with the key (anyone who can edit the artifact could re-digest it)."""
    key = os.environ.get(PLAN_KEY)
    if not key:
        if os.environ.get("CI", "").lower() == "true":
            raise PlanFileError(
                f"{path}: applying a saved plan under CI=true needs {PLAN_KEY} (the key the "
                "plan was signed with); nothing was changed"
            )
        return
    expected = sign(plan_digest(plan), key.encode())
    if not plan.signature:
        raise PlanFileError(
            f"{path}: the plan is not signed, and {PLAN_KEY} is set; nothing was changed"
        )
    if not hmac.compare_digest(plan.signature, expected):
        raise PlanFileError(
            f"{path}: the plan's signature does not match {PLAN_KEY}: it was edited, or signed "
            "with another key; nothing was changed"
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


def check_fresh(client: MedplumClient, identity: str, plan: Plan, path: str) -> None:
    """Same server, and nothing the plan names moved since it was made."""
    if plan.server != identity:
        raise PlanFileError(
            f"{path}: the plan was made for server {plan.server}, but this run talks to "
            f"{identity}; nothing was changed"
        )
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
