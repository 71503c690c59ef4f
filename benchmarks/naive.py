"""The naive pymedplum loop the benchmark compares against: what users write today."""

from __future__ import annotations

import random
import time

import httpx

from benchmarks.harness import Ids, Run, SandboxIds, Target, live_tenant, wanted_tenant


def naive(
    sb: Target,
    patients: int,
    fraction: float,
    sample: int,
    ids: Ids | None = None,
) -> tuple[Run, Run]:
    """What users write today: read each patient, compare, $set-accounts + wait, one by one.
    Requests are counted on the wire by an httpx hook on pymedplum's own client."""
    from pymedplum import MedplumClient, get_resource_accounts

    ids = ids or SandboxIds()
    sent = [0]

    def count(_: httpx.Request) -> None:
        sent[0] += 1

    client = MedplumClient(
        base_url=sb.url.rstrip("/") + "/",
        client_id=sb.creds[0],
        client_secret=sb.creds[1],
        allow_insecure_http=True,
        http_client=httpx.Client(
            timeout=60, follow_redirects=False, event_hooks={"request": [count]}
        ),
    )
    chosen = naive_sample(patients, sample)
    client.read_resource("Patient", ids.patient_id(chosen[0]))  # token fetched before timing
    sent[0] = 0
    read_started = time.monotonic()
    todo = []
    for i in chosen:
        patient = client.read_resource("Patient", ids.patient_id(i))
        want = f"Organization/{ids.org_id(wanted_tenant(i, fraction))}"
        have = get_resource_accounts(patient)
        if have != [want]:
            todo.append((i, want))
    read_wall = time.monotonic() - read_started
    read_requests = sent[0]
    sent[0] = 0
    apply_started = time.monotonic()
    for i, want in todo:
        job = client.set_accounts(
            f"Patient/{ids.patient_id(i)}", [want], propagate=True, prefer_async=True
        )
        client.wait_for_async_job(job, timeout=300)
    apply_wall = time.monotonic() - apply_started
    apply_requests = sent[0]
    client.close()
    scale = patients / len(chosen)
    changes_total = sum(1 for i in range(patients) if wanted_tenant(i, fraction) != live_tenant(i))
    apply_scale = changes_total / max(1, len(todo))
    plan = Run(
        "naive read loop",
        read_wall * scale,
        round(read_requests * scale),
        extra={"sampled_patients": len(chosen), "scaled_by": round(scale, 2)},
    )
    apply = Run(
        "naive apply loop",
        apply_wall * apply_scale,
        round(apply_requests * apply_scale),
        extra={
            "sampled_changes": len(todo),
            "scaled_by": round(apply_scale, 2),
            "ms_per_request": round(apply_wall * 1000 / max(1, apply_requests), 1),
        },
    )
    return plan, apply


def naive_sample(patients: int, sample: int) -> list[int]:
    """The patients the naive loop visits (the same ones in every run)."""
    return sorted(random.Random(7).sample(range(patients), min(sample, patients)))
