"""Plan assembly shared by `plan` and `apply`: manifests + live state → a stamped Plan."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime

from reconciler.connect import Connection
from reconciler.estimate import estimate
from reconciler.guard import mass_removals
from reconciler.live import read_live_state
from reconciler.logs import get_logger
from reconciler.model import LiveState, ManifestSet, Plan
from reconciler.planner import plan as compute_plan
from reconciler.progress import Progress

log = get_logger("reconciler.plan")


def build_plan(
    conn: Connection,
    manifests: ManifestSet,
    *,
    quota_points: int | None = None,
    parallelism: int = 1,
) -> tuple[Plan, LiveState]:
    """Read live state and plan; with `quota_points`, also estimate the apply's quota cost."""
    progress = Progress("reading live state")
    try:
        live = read_live_state(
            conn.client, manifests.tenants, progress=progress.update, parallelism=parallelism
        )
    finally:
        progress.close()
    started = time.monotonic()
    plan = compute_plan(manifests.tenants, live)
    mass = tuple(mass_removals(plan, manifests.tenants, live))
    plan = replace(
        plan,
        mass_removals=mass,
        warnings=tuple(
            f"{m.describe()}; apply will refuse without --allow-mass-removal" for m in mass
        ),
        server=conn.identity,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        manifest_files=manifests.files,
        manifest_digest=manifests.digest,
    )
    if quota_points is not None and not plan.is_empty:
        plan = replace(plan, estimate=estimate(conn.client, plan, quota_points=quota_points))
    log.info(
        "plan computed",
        changes=len(plan.changes),
        add=plan.added,
        remove=plan.removed,
        duration_ms=round((time.monotonic() - started) * 1000),
    )
    return plan, live
