"""The quota scenarios: an apply bigger than one quota window (ours paced vs the naive loop),
and the cheapest-schedule case (issue 28) whose floor the cost model computes."""

from __future__ import annotations

import argparse
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from benchmarks import floors
from benchmarks.harness import (
    CLIENT,
    TENANTS,
    Remote,
    Run,
    Sandbox,
    events,
    live_tenant,
    org_id,
    patient_id,
    run_cli,
    seed,
    wanted_tenant,
    write_manifests,
)
from reconciler.medplum.costs import set_accounts_cost
from reconciler.medplum.ratelimit import parse_ratelimit


def quota_scenario(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """An apply bigger than one quota window: our paced apply vs the naive loop."""
    patients, per_patient = args.quota_patients, 4
    window_s, quota = args.quota_window_s, args.fhir_quota
    data = work / "quota.sqlite"
    seed(data, patients, per_patient)
    changes = write_manifests(
        work / "quota-tenants", patients, 1.0
    )  # a third stay, two thirds move
    writes_needed = changes * (1 + per_patient)
    ours_data = work / "quota-ours.sqlite"
    shutil.copy(data, ours_data)
    sb = Sandbox(ours_data, "--fhir-quota", str(quota), "--quota-window-s", str(window_s))
    try:
        run, out, err = run_cli(
            sb,
            "ours: apply under quota",
            "apply",
            str(work / "quota-tenants"),
            "--auto-approve",
            "--no-verify",
            "--no-audit",
            "--lock=false",
            "--allow-mass-removal",  # the scenario moves every patient on purpose
            "--allow-mass-grant",
        )
        stats = sb.stats()
    finally:
        sb.stop()
    waits = [e for e in events(err) if e.get("event") == "waiting for quota"]
    first_window = [
        e for e in events(err) if e.get("event") == "retrying" and e.get("status") == 429
    ]
    max_rate = quota / 100 / window_s  # writes per second the quota allows
    achieved = writes_needed / run.wall_s
    run.extra = {
        "writes": writes_needed,
        "write_rate_per_s": round(achieved, 1),
        "quota_max_write_rate_per_s": round(max_rate, 1),
        "fraction_of_quota_rate": round(achieved / max_rate, 3),
        "429s_seen_by_client": len(first_window),
        "429s_answered_by_server": stats.get("throttled", 0),
        "quota_waits": len(waits),
        "failed": "Apply failed" in out,
    }
    naive_data = work / "quota-naive.sqlite"
    shutil.copy(data, naive_data)
    sb = Sandbox(naive_data, "--fhir-quota", str(quota), "--quota-window-s", str(window_s))
    naive_result: dict[str, Any] = {}
    try:
        naive_result = naive_under_quota(sb, patients, min(args.naive_sample, patients), window_s)
    finally:
        sb.stop()
    return {"runs": [asdict(run)], "naive": naive_result, "pacing": pacing_scenario(args, work)}


PACING_PATIENTS, PACING_PER_PATIENT = 10, 3
PACING_ARGS = (
    "--auto-approve", "--no-verify", "--no-audit", "--lock=false", "--allow-mass-removal",
    "--allow-mass-grant",
)  # fmt: skip


def cheapest_points(changes: int, compartment: int) -> int:
    """What the calls must cost at the least (the cost model): every change synchronous."""
    return changes * set_accounts_cost(compartment, propagate=True, asynchronous=False)


def schedule_result(
    quota: int, window_s: float, unmetered: Run, metered: Run, err: str, throttled: int | None
) -> dict[str, Any]:
    """The paced apply against the cheapest schedule: the calls' points in windows of the
    quota, the work itself taking what the unmetered apply took."""
    points = cheapest_points(PACING_PATIENTS, PACING_PER_PATIENT)
    floor_s = floors.cheapest_schedule_s(points, quota, window_s, unmetered.wall_s)
    found = events(err)
    writes = next((e for e in found if e.get("event") == "writes finished"), {})
    summary = next((e for e in found if e.get("event") == "quota"), {})
    return {
        "quota_points": quota,
        "window_s": window_s,
        "cheapest_points": points,
        "points_estimated": summary.get("points_estimated"),
        "points_spent": summary.get("points_spent"),
        "sync_calls": writes.get("sync_calls"),
        "async_calls": writes.get("async_calls"),
        "unmetered_apply_s": round(unmetered.wall_s, 2),
        "metered_apply_s": round(metered.wall_s, 2),
        "floor_s": round(floor_s, 2),
        "metered_over_floor (<= 1.2)": floors.ratio(metered.wall_s, floor_s),
        "429s_seen_by_client": sum(
            1 for e in found if e.get("event") == "retrying" and e.get("status") == 429
        ),
        "429s_answered_by_server (0)": throttled,
        "failed": "Apply failed" in err or not writes,
    }


def pacing_scenario(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Issue 21's case: 10 patients x 3 Observations under a 3,000-point window (4,200 points
    of synchronous calls, so one reset is unavoidable), on two sandboxes: the same apply
    unmetered (the work) and metered."""
    quota, window_s = 3_000, args.pacing_window_s
    data = work / "pacing.sqlite"
    seed(data, PACING_PATIENTS, PACING_PER_PATIENT)
    tenants = str(work / "pacing-tenants")
    write_manifests(Path(tenants), PACING_PATIENTS, 1.0)
    runs: dict[str, tuple[Run, str, int]] = {}
    for name, flags in (
        ("unmetered", ()),
        ("metered", ("--fhir-quota", str(quota), "--quota-window-s", str(window_s))),
    ):
        copy = work / f"pacing-{name}.sqlite"
        shutil.copy(data, copy)
        sb = Sandbox(copy, *flags)
        try:
            run, _, err = run_cli(sb, f"ours: pacing, {name}", "apply", tenants, *PACING_ARGS)
            runs[name] = (run, err, int(sb.stats().get("throttled", 0)))
        finally:
            sb.stop()
    (unmetered, _, _), (metered, err, throttled) = runs["unmetered"], runs["metered"]
    return schedule_result(quota, window_s, unmetered, metered, err, throttled)


def fresh_window(url: str, creds: tuple[str, str], probe: str) -> tuple[int, float]:
    """Wait for the quota client's window to reset, then read its quota and window from the
    `RateLimit` header of a one-point read (Medplum does not announce the limit itself)."""
    direct = floors.Direct(url, creds, pool=2)
    try:
        first = parse_ratelimit(direct.http.get(f"{direct.base}/fhir/R4/{probe}").headers.get(
            "RateLimit"))["fhirInteractions"]  # fmt: skip
        time.sleep(first.reset_s + 0.5)
        fresh = parse_ratelimit(direct.http.get(f"{direct.base}/fhir/R4/{probe}").headers.get(
            "RateLimit"))["fhirInteractions"]  # fmt: skip
        return fresh.remaining + 1, float(math.ceil(fresh.reset_s))
    finally:
        direct.close()


def server_pacing_scenario(
    args: argparse.Namespace,
    work: Path,
    admin_creds: tuple[str, str],
    quota_creds: tuple[str, str],
) -> dict[str, Any]:
    """The same case on any Medplum: two fresh copies seeded by the admin; the unmetered work
    measured with the admin, the paced apply with the quota-limited client (a project admin
    whose membership has a small `fhirQuota`), started on a fresh window of its own."""
    from benchmarks import remote
    from reconciler.medplum import MedplumClient

    run_id = remote.new_run_id()
    created = remote.Created()
    admin = MedplumClient(args.server, *admin_creds, timeout=120)
    admin_target = Remote(args.server, admin_creds)
    quota_target = Remote(args.server, quota_creds)
    try:
        copies = {}
        for name in ("unmetered", "metered"):
            copies[name] = remote.seed(
                admin, run_id=run_id, label=f"pacing-{name}", tenants=TENANTS,
                indices=range(PACING_PATIENTS), per_patient=PACING_PER_PATIENT,
                live_tenant=live_tenant, created=created,
            )  # fmt: skip
            write_manifests(work / f"pacing-{name}", PACING_PATIENTS, 1.0, copies[name])
        unmetered, _, _ = run_cli(
            admin_target, "ours: pacing, admin", "apply", str(work / "pacing-unmetered"),
            *PACING_ARGS,
        )  # fmt: skip
        quota, window_s = fresh_window(
            args.server, quota_creds, f"Organization/{copies['metered'].org_id(0)}"
        )
        metered, _, err = run_cli(
            quota_target, "ours: pacing, quota client", "apply", str(work / "pacing-metered"),
            *PACING_ARGS,
        )  # fmt: skip
        result = schedule_result(quota, window_s, unmetered, metered, err, None)
        result["runs"] = [asdict(unmetered), asdict(metered)]
        return result
    finally:
        remote.delete_created(admin, created)
        admin.close()


def naive_under_quota(sb: Sandbox, patients: int, sample: int, window_s: float) -> dict[str, Any]:
    """The pymedplum loop with synchronous propagation, as many scripts do: count failures and
    patients whose compartment was left half-propagated by a quota cut."""
    from pymedplum import MedplumClient, get_resource_accounts

    client = MedplumClient(
        base_url=sb.url + "/",
        client_id=CLIENT[0],
        client_secret=CLIENT[1],
        allow_insecure_http=True,
    )
    failures = 0
    touched = []
    started = time.monotonic()
    for i in range(sample):
        want = f"Organization/{org_id(wanted_tenant(i, 1.0))}"
        try:
            patient = client.read_resource("Patient", patient_id(i))
            if get_resource_accounts(patient) != [want]:
                client.set_accounts(f"Patient/{patient_id(i)}", [want], propagate=True)
                touched.append((i, want))
        except Exception:
            failures += 1
            touched.append((i, want))
    wall = time.monotonic() - started
    time.sleep(window_s)  # let the quota reset before inspecting the damage
    partial = 0
    token = httpx.post(
        f"{sb.url}/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT[0],
            "client_secret": CLIENT[1],
        },
    ).json()["access_token"]
    http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    for i, want in touched:
        while True:
            r = http.get(
                f"{sb.url}/fhir/R4/",
                params={
                    "_type": "Observation,Encounter",
                    "_compartment": f"Patient/{patient_id(i)}",
                    "_count": "100",
                },
            )
            if r.status_code != 429:
                break
            time.sleep(0.5)
        accounts = [get_resource_accounts(e["resource"]) for e in r.json().get("entry", [])]
        partial += any(a != [want] for a in accounts)
    return {
        "patients": sample,
        "wall_s": round(wall, 2),
        "failed_calls": failures,
        "partially_propagated_patients": partial,
    }
