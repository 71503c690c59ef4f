"""What an apply will cost in Medplum's FHIR quota: every `$set-accounts` writes its patient and,
with propagation, every compartment resource (each a 100-point write charged to the caller;
medplum-api.md, "Rate limits"). The header gives only what remains, not the limit, so the rate is
an assumption (`--quota-points`, Medplum's default 50,000 points per minute)."""

from __future__ import annotations

from reconciler.medplum.client import MedplumClient
from reconciler.model import Estimate, Plan

WRITE_POINTS = 100
DEFAULT_QUOTA_POINTS = 50_000


def estimate(
    client: MedplumClient, plan: Plan, *, quota_points: int = DEFAULT_QUOTA_POINTS
) -> Estimate:
    propagating = [c.patient for c in plan.changes if any(s.propagate for s in c.steps)]
    compartment = client.count_compartments(propagating) if propagating else 0
    calls = sum(len(c.steps) for c in plan.changes)
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
