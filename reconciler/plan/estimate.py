"""What an apply will cost in Medplum's FHIR quota, with Medplum's own cost model
(medplum/costs.py): a propagating `$set-accounts` on a patient with k compartment resources is
120 + 100·k points synchronously and 320 + 100·k through an async job; without propagation 100.
Each call goes the way apply will send it (apply/executor.py: synchronously when the compartment
is small and one window can hold it). Then what apply reads and writes around the calls: per
batch its re-read, the compartment sizes, the crash journal (written, then removed) and a lock
check; per resource its history (the other-writers check); verification's compartment reads;
the lock and the audit record. Compartment sizes are read as ids (never a multi-type count:
5.0.10 answers 1); past SAMPLE patients an even sample is read and scaled. The header gives only
what remains, not the limit, so the rate is an assumption (`--quota-points`, 50,000/min).

Apply's own plan (`sized_ahead`) reads the exact sizes of the first patients it will write — as
many as one quota window can pay for, at most APPLY_AHEAD — and hands them to the writes
(model.KnownSizes): read once, not once here and again batch by batch."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate

from reconciler.medplum.client import MedplumClient
from reconciler.medplum.costs import (
    HISTORY,
    READ,
    SEARCH,
    SYNC_MAX_COMPARTMENT,
    WRITE,
    set_accounts_cost,
)
from reconciler.medplum.reads import COMPARTMENT_BATCH, chunks
from reconciler.model import (
    DEFAULT_PARALLELISM,
    Change,
    Estimate,
    KnownSizes,
    Plan,
    apply_batches,
)
from reconciler.plan.live import MAX_READS_IN_FLIGHT

SAMPLE = 250  # patients whose compartments are read; more are estimated from them
APPLY_AHEAD = 2_000  # at most this many sized exactly by apply's own plan
DEFAULT_QUOTA_POINTS = 50_000
IDS_PER_SEARCH = 100  # ids per batched read
RESERVE = 250  # what the pacer keeps back at the default parallelism
LOCK = 3 * WRITE + 2 * READ  # the lock taken, renewed and removed, and read around that
AUDIT = WRITE  # the AuditEvent


@dataclass(frozen=True)
class Extras:
    """What the apply does beside its calls: `plan` assumes apply's defaults; apply's own plan
    knows its options (`--lock=false`, `--no-audit`, `--no-verify`)."""

    lock: bool = True
    audit: bool = True
    verify: bool = True


DEFAULTS = Extras()


def is_async(compartment: int, window: int) -> bool:
    """How apply sends a propagating call: async when the compartment is large or one window
    (less the pacer's reserve) cannot hold the synchronous call."""
    sync = set_accounts_cost(compartment, propagate=True, asynchronous=False)
    return compartment > SYNC_MAX_COMPARTMENT or sync > window - RESERVE


def sized_ahead(window: int) -> int:
    """How many of its first propagating patients apply's plan sizes exactly: as many as one
    window (`window` points, 0 when the server shows no quota) pays for at the cheapest
    propagating call — about those the writes reach before the sizes are stale — at most
    APPLY_AHEAD."""
    cheapest = set_accounts_cost(0, propagate=True, asynchronous=False)
    return min(APPLY_AHEAD, window // cheapest) if window else APPLY_AHEAD


def overhead_points(
    changes: int,
    patients: int,
    compartment_resources: int,
    sized: int = 0,
    extras: Extras = DEFAULTS,
) -> int:
    """What apply reads and writes beside the calls themselves; `sized`: the first changes
    whose compartment sizes apply's plan read already (their batches do not read them)."""
    if not changes:
        return 0
    per_batch = (
        2 * WRITE  # the journal entry: written before the batch, removed once checked
        + (READ if extras.lock else 0)  # the lock confirmed
    )
    batches = apply_batches(changes, DEFAULT_PARALLELISM)
    ends = accumulate(batches)
    sizes_reads = SEARCH * sum(1 for end in ends if end > sized)  # one per batch not sized
    rereads = sum(SEARCH * math.ceil(size / IDS_PER_SEARCH) for size in batches)
    history = HISTORY * changes  # one history read per resource written, in batches
    verify = SEARCH * (
        math.ceil(patients / COMPARTMENT_BATCH) + math.ceil(compartment_resources / 1000)
    )
    fixed = (LOCK if extras.lock else 0) + (AUDIT if extras.audit else 0)
    return (
        fixed + len(batches) * per_batch + sizes_reads + rereads + history
        + (verify if extras.verify else 0)
    )  # fmt: skip


def read_sizes(client: MedplumClient, refs: Sequence[str], parallelism: int) -> dict[str, int]:
    """Compartment sizes, COMPARTMENT_BATCH patients a search, up to MAX_READS_IN_FLIGHT of
    them at a time (the plan's reads' bound)."""
    parts = list(chunks(refs, COMPARTMENT_BATCH))
    workers = max(1, min(parallelism, MAX_READS_IN_FLIGHT, len(parts)))
    if workers == 1:
        return client.compartment_sizes(refs) if refs else {}
    sizes: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sizes") as pool:
        for part in pool.map(client.compartment_sizes, parts):
            sizes.update(part)
    return sizes


def estimate(
    client: MedplumClient,
    plan: Plan,
    *,
    quota_points: int = DEFAULT_QUOTA_POINTS,
    ahead: int = 0,
    extras: Extras = DEFAULTS,
    parallelism: int = 1,
) -> tuple[Estimate, KnownSizes | None]:
    """The estimate, and the sizes it read of the first `ahead` propagating patients (apply's
    own plan, `sized_ahead`; None when none were), an even sample of the rest beside them."""
    changes: Sequence[Change] = (*plan.changes, *plan.resource_changes)
    propagating = [c.ref for c in plan.changes if any(s.propagate for s in c.steps)]
    first, rest = propagating[:ahead], propagating[ahead:]
    sample = rest[:: max(1, math.ceil(len(rest) / SAMPLE))]
    read_at = time.monotonic()  # when the read started: the sizes are no fresher than that
    sizes = read_sizes(client, [*first, *sample], parallelism)
    average = sum(sizes.values()) / len(sizes) if sizes else 0.0
    points = sync_calls = async_calls = compartment = 0
    for change in changes:
        size = sizes.get(change.ref, round(average))
        for step in change.steps:
            if not step.propagate or not change.ref.startswith("Patient/"):
                points += WRITE
                continue
            asynchronous = is_async(size, quota_points)
            points += set_accounts_cost(size, propagate=True, asynchronous=asynchronous)
            compartment += min(size, 1000)
            async_calls += asynchronous
            sync_calls += not asynchronous
    calls = sum(len(c.steps) for c in changes)
    sized = 0  # the changes, in apply's order, up to the last one sized ahead
    if first:
        last = first[-1]
        sized = next(i for i, c in enumerate(changes) if c.ref == last) + 1
    overhead = overhead_points(len(changes), len(propagating), compartment, sized, extras)
    total = points + overhead
    known = KnownSizes({ref: sizes[ref] for ref in first}, read_at) if first else None
    return Estimate(
        writes=calls + compartment,
        patient_writes=calls,
        compartment_writes=compartment,
        quota_points=total,
        assumed_points_per_minute=quota_points,
        minutes=round(total / quota_points, 2),
        sync_calls=sync_calls,
        async_calls=async_calls,
        overhead_points=overhead,
    ), known


def estimate_line(data: Estimate) -> str:
    duration = f"{data.minutes * 60:.0f} s" if data.minutes < 1 else f"{data.minutes:,.1f} min"
    calls = f"{data.patient_writes:,} $set-accounts"
    if data.sync_calls or data.async_calls:
        calls += f" ({data.sync_calls:,} synchronous, {data.async_calls:,} async)"
    return (
        f"Estimated cost: {calls} and {data.compartment_writes:,} compartment "
        f"write{'' if data.compartment_writes == 1 else 's'} ≈ {data.quota_points:,} quota "
        f"points ≈ {duration} at an assumed {data.assumed_points_per_minute:,} points/min"
    )
