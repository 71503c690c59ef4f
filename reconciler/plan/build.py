"""Plan assembly shared by `plan` and `apply`: manifests + live state → a stamped Plan."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from reconciler.clock import iso_utc
from reconciler.errors import PlanError
from reconciler.logs import get_logger
from reconciler.medplum.client import MedplumClient
from reconciler.model import LiveState, ManifestSet, Plan
from reconciler.plan.access import plan_access
from reconciler.plan.estimate import DEFAULTS, Extras, estimate, sized_ahead
from reconciler.plan.guard import mass_grants, mass_removals
from reconciler.plan.live import read_live_state
from reconciler.plan.planner import plan as compute_plan

log = get_logger("reconciler.plan")


def build_plan(
    client: MedplumClient,
    server_identity: str,
    manifests: ManifestSet,
    *,
    quota_points: int | None = None,
    parallelism: int = 1,
    progress: Callable[[int], None] | None = None,
    target: str = "",
    targets: tuple[str, ...] = (),
    for_apply: Extras | None = None,
) -> tuple[Plan, LiveState]:
    """Read live state and plan; with `quota_points`, also estimate the apply's quota cost
    — `for_apply` (what that apply does beside its calls): apply's own plan, which sizes its
    first patients' compartments exactly and keeps the sizes for the writes
    (plan/estimate.py)."""
    live = read_live_state(client, manifests.tenants, progress=progress, parallelism=parallelism)
    started = time.monotonic()
    plan = compute_plan(manifests.tenants, live)
    access = plan_access(manifests.tenants, live)
    if access.problems:
        raise PlanError(access.problems)
    mass = tuple(mass_removals(plan, manifests.tenants, live))
    grants = tuple(mass_grants(plan, manifests.tenants, live))
    plan = replace(
        plan,
        mass_removals=mass,
        mass_grants=grants,
        warnings=(
            *(f"{m.describe()}; apply will refuse without --allow-mass-removal" for m in mass),
            *(f"{g.describe()}; apply will refuse without --allow-mass-grant" for g in grants),
            *access.warnings,
        ),
        access_changes=tuple(access.changes),
        managed_access=access.managed,
        server=server_identity,
        target=target,
        targets=targets,
        created_at=iso_utc(millis=False),
        manifest_files=manifests.files,
        manifest_digest=manifests.digest,
    )
    if quota_points is not None and not plan.is_empty:
        ahead = sized_ahead(client.pacer.capacity) if for_apply is not None else 0
        cost, known = estimate(
            client, plan, quota_points=quota_points, ahead=ahead,
            extras=for_apply or DEFAULTS, parallelism=parallelism,
        )  # fmt: skip
        plan = replace(plan, estimate=cost, known_sizes=known)
    log.info(
        "plan computed",
        changes=len(plan.changes),
        access_changes=len(plan.access_changes),
        add=plan.added,
        remove=plan.removed,
        duration_ms=round((time.monotonic() - started) * 1000),
    )
    return plan, live
