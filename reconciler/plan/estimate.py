"""What an apply will cost in Medplum's FHIR quota: every `$set-accounts` writes its target and,
with propagation, every resource of the patient's compartment — changed or not, up to the
propagation cap (Medplum's set-accounts.ts charges and counts each one) — each a 100-point
write charged to the caller (medplum-api.md, "Rate limits"). Compartment sizes are read as ids
(never a multi-type count: 5.0.10 answers 1); past SAMPLE patients, an even sample of them is
read and scaled. The header gives only what remains, not the limit, so the rate is an
assumption (`--quota-points`, Medplum's default 50,000 points per minute)."""

from __future__ import annotations

import math

from reconciler.medplum.client import MedplumClient
from reconciler.model import Estimate, Plan

WRITE_POINTS = 100
SAMPLE = 250  # patients whose compartments are read; more are estimated from them
PROPAGATE_CAP = 1000  # Medplum's documented propagation limit per call
DEFAULT_QUOTA_POINTS = 50_000


def estimate(
    client: MedplumClient, plan: Plan, *, quota_points: int = DEFAULT_QUOTA_POINTS
) -> Estimate:
    runs = {c.ref: sum(s.propagate for s in c.steps) for c in plan.changes}
    propagating = [ref for ref, n in runs.items() if n]
    sample = propagating[:: max(1, math.ceil(len(propagating) / SAMPLE))]
    sizes = client.compartment_sizes(sample) if sample else {}
    charged = sum(min(size, PROPAGATE_CAP) * runs[ref] for ref, size in sizes.items())
    compartment = round(charged * len(propagating) / len(sample)) if sample else 0
    calls = sum(len(c.steps) for c in (*plan.changes, *plan.resource_changes))
    writes = calls + compartment
    points = writes * WRITE_POINTS
    return Estimate(
        writes=writes,
        patient_writes=calls,
        compartment_writes=compartment,
        quota_points=points,
        assumed_points_per_minute=quota_points,
        minutes=round(points / quota_points, 2),
    )


def estimate_line(data: Estimate) -> str:
    duration = f"{data.minutes * 60:.0f} s" if data.minutes < 1 else f"{data.minutes:,.1f} min"
    return (
        f"Estimated cost: {data.writes:,} write{'' if data.writes == 1 else 's'} ≈ "
        f"{data.quota_points:,} quota points ≈ {duration} at an assumed "
        f"{data.assumed_points_per_minute:,} points/min"
    )
