"""Plan and apply with the reconciler against a pymedplum loop, side by side, in one run.

    python benchmarks/reconcile.py                 # N=5,000 patients, K=4, 20 % change
    python benchmarks/reconcile.py --quick         # N=500, naive sample 20: about a minute
    python benchmarks/reconcile.py --rss-patients 100000   # also: plan RSS over 100,000 patients
    python benchmarks/reconcile.py --quota         # the quota scenario (about a minute)
    MEDPLUM_CLIENT_ID=… MEDPLUM_CLIENT_SECRET=… \
      python benchmarks/reconcile.py --server https://medplum.example/   # on any Medplum

Each scenario seeds a sandbox data file directly, copies it per contender, starts
`reconciler sandbox serve --latency-ms L` on a free loopback port, and measures wall time,
HTTP requests (the sandbox's /sandbox/stats counter) and peak RSS (the child's rusage). Figures
are printed as a table; `--json FILE` writes them all with the ratios. No timing is asserted.
With `--server` the main comparison runs on that server instead (benchmarks/remote.py: seeded
over HTTP, requests counted by the clients, only what it seeded deleted).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import floors, server_bound  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    FLOOR_KINDS,
    FLOOR_TO,
    NAMESPACE,
    TENANTS,
    Ids,
    Remote,
    Run,
    Sandbox,
    SandboxIds,
    Target,
    events,
    floor_patient_id,
    install_rss_hook,
    live_tenant,
    org_id,
    patient_id,
    run_cli,
    seed,
    seed_floor_patients,
    wanted_tenant,
    write_manifests,
)  # fmt: skip
from benchmarks.quota import quota_scenario, server_pacing_scenario  # noqa: E402
from reconciler.sandbox.store import Store  # noqa: E402

# --- the naive pymedplum loop -------------------------------------------------------------------


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


# --- scenarios ---------------------------------------------------------------------------------


def work_s(err: str) -> float:
    """The plan's own work from its log: reading the live state and planning (the process's
    start and imports are not the server's time)."""
    found = {e.get("event"): e for e in events(err)}
    return (
        sum(
            found.get(name, {}).get("duration_ms", 0)
            for name in ("live state read", "plan computed")
        )
        / 1000
    )


def apply_once(
    sb: Target, tenants: str, args: argparse.Namespace, changes: int, round_number: int = 1
) -> Run:
    """`apply --no-verify` of the scenario's changes; its write phase's rate in `extra`."""
    name = "ours: apply --no-verify" + (f" (round {round_number})" if round_number > 1 else "")
    apply, out, err = run_cli(
        sb, name, "apply", tenants, "--auto-approve", "--no-verify",
        "--parallelism", str(args.parallelism),
    )  # fmt: skip
    if f"Apply complete! {changes:,} patient" not in out:
        raise SystemExit(f"apply did not complete:\n{out[-1500:]}")
    writes = next(e for e in events(err) if e.get("event") == "writes finished")
    others = next(
        (e for e in events(err) if e.get("event") == "other writers' changes checked"), {}
    )
    summary = next((e for e in events(err) if e.get("event") == "quota"), {})
    write_phase = writes["duration_ms"] / 1000
    apply.extra = {
        "write_phase_s": round(write_phase, 2),
        "history_check_s": round(others.get("duration_ms", 0) / 1000, 2),
        "writes_estimated": writes.get("writes_estimated"),
        "writes_made": writes.get("writes_made"),
        "sync_calls": writes.get("sync_calls"),
        "async_calls": writes.get("async_calls"),
        "in_flight": writes.get("in_flight"),
        "points_estimated": summary.get("points_estimated"),
        "per_s": round(changes / write_phase, 1) if write_phase else 0.0,
    }
    return apply


def one_round(
    sb: Target,
    args: argparse.Namespace,
    tenants: str,
    changes: int,
    refs: dict[str, list[str]],
    account: str,
    runs: list[Run],
) -> server_bound.Round:
    """One server-bound round on `sb`: the floors around one apply (appended to `runs`)."""

    def ours() -> float:
        runs.append(apply_once(sb, tenants, args, changes, len(runs) + 1))
        return float(runs[-1].extra["per_s"])

    return server_bound.measure(sb, args.parallelism, refs, account, ours)


def main_scenario(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    base = work / "base.sqlite"
    t0 = time.monotonic()
    seed(base, args.patients, args.resources_per_patient)
    seed_s = time.monotonic() - t0
    changes = write_manifests(work / "tenants", args.patients, args.change_fraction)
    floor_count = max(20, min(changes, 300))
    seed_floor_patients(base, FLOOR_KINDS, floor_count, args.resources_per_patient)
    tenants = str(work / "tenants")
    flags = ["--latency-ms", str(args.latency_ms), "--job-delay-ms", str(args.job_delay_ms)]
    results: dict[str, Any] = {"seed_s": round(seed_s, 2), "changes": changes}

    ours_data = work / "ours.sqlite"
    shutil.copy(base, ours_data)
    sb = Sandbox(ours_data, *flags)
    try:
        listing = floors.listing_s(
            sb.url, sb.creds, [patient_id(i) for i in range(args.patients)],
            [f"Organization/{org_id(t)}" for t in range(len(TENANTS))],
        )  # fmt: skip
        plan, out, err = run_cli(
            sb, "ours: plan", "plan", tenants, "--parallelism", str(args.parallelism)
        )
        plan.extra = {"work_s": round(work_s(err), 2)}
        # The same plan without the quota estimate's counting requests (issue 9's budget).
        bare, _, err = run_cli(sb, "ours: plan --no-estimate", "plan", tenants, "--no-estimate")
        bare.extra = {"work_s": round(work_s(err), 2)}
        floor_refs = {kind: [f"Patient/{floor_patient_id(kind, i)}" for i in range(floor_count)]
                      for kind in FLOOR_KINDS}  # fmt: skip
        applies: list[Run] = []
        to = f"Organization/{FLOOR_TO}"
        rounds = [one_round(sb, args, tenants, changes, floor_refs, to, applies)]
        again, out, _ = run_cli(sb, "ours: plan again", "plan", tenants, "--detailed-exitcode")
        if "No changes. Live accounts match the manifests." not in out:
            raise SystemExit("the plan after apply is not empty")
    finally:
        sb.stop()
    # More rounds of the server-bound comparison, each on a fresh copy of the seeded data.
    for number in range(2, args.rate_rounds + 1):
        data = work / f"round-{number}.sqlite"
        shutil.copy(base, data)
        sb = Sandbox(data, *flags)
        try:
            rounds.append(one_round(sb, args, tenants, changes, floor_refs, to, applies))
        finally:
            sb.stop()
        data.unlink()
    apply = applies[0]
    results["floors"], results["targets"] = server_bound.figures(listing, rounds, plan, bare)

    verify_data = work / "verify.sqlite"
    shutil.copy(base, verify_data)
    sb = Sandbox(verify_data, *flags)
    try:
        applied, out, err = run_cli(
            sb,
            "ours: apply (verify on)",
            "apply",
            tenants,
            "--auto-approve",
            "--parallelism",
            str(args.parallelism),
        )
        verified = next((e for e in events(err) if e.get("event") == "verified"), {})
        applied.extra = {
            "verification_ms": verified.get("duration_ms"),
            "compartment_resources_read": verified.get("compartment_resources"),
        }
    finally:
        sb.stop()

    runs = [plan, bare, apply, applied, again, *applies[1:]]
    naive_plan = naive_apply = None
    if not args.skip_naive:
        naive_data = work / "naive.sqlite"
        shutil.copy(base, naive_data)
        sb = Sandbox(naive_data, *flags)
        try:
            naive_plan, naive_apply = naive(
                sb, args.patients, args.change_fraction, args.naive_sample
            )
        finally:
            sb.stop()
        runs += [naive_plan, naive_apply]

    results["runs"] = [asdict(r) for r in runs]
    results["ratios"] = {
        "plan_requests": plan.requests,
        "plan_requests_no_estimate": bare.requests,
        "plan_request_budget_N_over_500": args.patients // 500,
    }
    if naive_plan and naive_apply:
        results["ratios"]["naive_plan_over_ours"] = round(naive_plan.wall_s / plan.wall_s, 1)
        results["ratios"]["naive_apply_over_ours_write_phase"] = round(
            naive_apply.wall_s / float(apply.extra["write_phase_s"]), 1
        )
        results["ratios"]["naive_apply_over_ours_apply_command"] = round(
            naive_apply.wall_s / apply.wall_s, 1
        )
    return results


def server_scenario(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The main comparison on any Medplum (`--server URL`, credentials from MEDPLUM_CLIENT_ID /
    MEDPLUM_CLIENT_SECRET): seed a fresh copy over HTTP, plan, apply, plan again, verify; seed
    a second copy of the naive loop's sample and run it; delete what was seeded."""
    from benchmarks import remote
    from reconciler.medplum import MedplumClient

    client_id = os.environ.get("MEDPLUM_CLIENT_ID")
    secret = os.environ.get("MEDPLUM_CLIENT_SECRET")
    if not client_id or not secret:
        raise SystemExit(
            "--server needs MEDPLUM_CLIENT_ID and MEDPLUM_CLIENT_SECRET (a project admin)"
        )
    target = Remote(args.server, (client_id, secret))
    client = MedplumClient(args.server, client_id, secret, timeout=120)
    run_id = remote.new_run_id()
    created = remote.Created()
    results: dict[str, Any] = {
        "run_id": run_id,
        "identifier_system": f"urn:reconciler-bench:{run_id}",
    }
    runs: list[Run] = []
    try:
        started = time.monotonic()
        ours = remote.seed(
            client, run_id=run_id, label="ours", tenants=TENANTS, indices=range(args.patients),
            per_patient=args.resources_per_patient, live_tenant=live_tenant, created=created,
        )  # fmt: skip
        results["seed_s"] = round(time.monotonic() - started, 2)
        results["seeded"] = len(created.refs)
        results["latency"] = remote.probe_latency(client, f"Organization/{ours.org_id(0)}")
        tenants = str(work / "server-tenants")
        changes = write_manifests(Path(tenants), args.patients, args.change_fraction, ours)
        results["changes"] = changes
        floor_count = max(20, min(changes, 300))
        floor_copy = remote.seed(
            client, run_id=run_id, label="floor", tenants=TENANTS,
            indices=range(len(FLOOR_KINDS) * floor_count),
            per_patient=args.resources_per_patient, live_tenant=lambda i: 0, created=created,
        )  # fmt: skip
        floor_ids = {
            kind: [f"Patient/{floor_copy.patient_id(k * floor_count + i)}"
                   for i in range(floor_count)]
            for k, kind in enumerate(FLOOR_KINDS)
        }  # fmt: skip
        floor_to = f"Organization/{floor_copy.org_id(1)}"

        listing = floors.listing_s(
            args.server, target.creds, [ours.patient_id(i) for i in range(args.patients)],
            [f"Organization/{ours.org_id(t)}" for t in range(len(TENANTS))],
        )  # fmt: skip
        parallel = ("--parallelism", str(args.parallelism))
        plan, _, err = run_cli(target, "ours: plan", "plan", tenants, *parallel)
        plan.extra = {"work_s": round(work_s(err), 2)}
        bare, _, err = run_cli(target, "ours: plan --no-estimate", "plan", tenants, "--no-estimate")
        bare.extra = {"work_s": round(work_s(err), 2)}
        # One round here: each more would need its own seeded copy on that server.
        applies: list[Run] = []
        rounds = [one_round(target, args, tenants, changes, floor_ids, floor_to, applies)]
        apply = applies[0]
        results["floors"], results["targets"] = server_bound.figures(listing, rounds, plan, bare)
        again, out, _ = run_cli(target, "ours: plan again", "plan", tenants, "--detailed-exitcode")
        if "No changes. Live accounts match the manifests." not in out:
            raise SystemExit("the plan after apply is not empty")
        proof, out, _ = run_cli(target, "ours: verify", "verify", tenants, *parallel)
        proof.extra = {"result": out.strip().splitlines()[-1] if out.strip() else ""}
        runs += [plan, bare, apply, again, proof]
        if not args.skip_naive:
            copy = remote.seed(
                client, run_id=run_id, label="naive", tenants=TENANTS,
                indices=naive_sample(args.patients, args.naive_sample),
                per_patient=args.resources_per_patient, live_tenant=live_tenant, created=created,
            )  # fmt: skip
            naive_plan, naive_apply = naive(
                target, args.patients, args.change_fraction, args.naive_sample, copy
            )
            runs += [naive_plan, naive_apply]
            results["ratios"] = {
                "naive_plan_over_ours": round(naive_plan.wall_s / plan.wall_s, 1),
                "naive_apply_over_ours_apply_command": round(naive_apply.wall_s / apply.wall_s, 1),
            }
    finally:
        results["runs"] = [asdict(r) for r in runs]
        if args.keep_seeded:
            results["kept"] = (
                f"{len(created.refs):,} resources, identifier system {results['identifier_system']}"
            )
        else:
            results["deleted"] = remote.delete_created(client, created)
        client.close()
    return results


def rss_scenario(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data = work / "rss.sqlite"
    t0 = time.monotonic()
    seed(data, args.rss_patients, 1)
    seed_s = time.monotonic() - t0
    write_manifests(work / "rss-tenants", args.rss_patients, args.change_fraction)
    sb = Sandbox(data)
    try:
        run, out, _ = run_cli(
            sb, f"ours: plan N={args.rss_patients:,}", "plan", str(work / "rss-tenants")
        )
    finally:
        sb.stop()
    run.extra = {"plan_summary": out.strip().splitlines()[-2] if out.strip() else ""}
    return {"seed_s": round(seed_s, 2), "runs": [asdict(run)]}


# --- tenant access: 1,000 memberships x 3 tenants ----------------------------------------------

POLICY_ID = str(uuid.uuid5(NAMESPACE, "policy-staff"))


def membership_id(i: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"membership-{i}"))


def access_scenario(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Plan and apply `spec.access` for N memberships over 3 tenants; a `--change-fraction`
    share of them move to the next tenant (one revocation and one grant each), the others are
    granted their tenant for the first time. Then the plan again, and verify --access."""
    count = args.access_memberships
    data = work / "access.sqlite"
    seed(data, 30, 0)  # a few patients per tenant, so the proof has something to count
    store = Store(str(data))
    policy = {
        "resourceType": "AccessPolicy", "id": POLICY_ID, "name": "staff", "meta": {},
        "compartment": {"reference": "%organization"},
        "resource": [{"resourceType": "Patient", "criteria": "Patient?_compartment=%organization"}],
    }  # fmt: skip
    memberships = []
    for i in range(count):
        access = []
        if i % 2 == 0:  # half already hold their live tenant
            ref = f"Organization/{org_id(live_tenant(i))}"
            access.append(
                {"policy": {"reference": f"AccessPolicy/{POLICY_ID}"},
                 "parameter": [{"name": "organization", "valueReference": {"reference": ref}}]}
            )  # fmt: skip
        memberships.append(
            {"resourceType": "ProjectMembership", "id": membership_id(i), "meta": {},
             "user": {"reference": f"ClientApplication/staff-{i}"},
             "profile": {"reference": f"Practitioner/staff-{i}"}, "access": access}
        )  # fmt: skip
    store.bulk_insert([policy, *memberships])
    store.close()
    manifests = work / "access-tenants"
    manifests.mkdir()
    members: list[list[str]] = [[], [], []]
    for i in range(count):
        members[wanted_tenant(i, args.change_fraction)].append(
            f"        - ProjectMembership/{membership_id(i)}\n"
        )
    for t, name in enumerate(TENANTS):
        (manifests / f"{name}.yaml").write_text(
            f"apiVersion: reconciler/v1\nkind: Tenant\nmetadata:\n  name: {name}\nspec:\n"
            f"  account: Organization/{org_id(t)}\n  access:\n"
            f"    - policy: AccessPolicy/{POLICY_ID}\n      members:\n" + "".join(members[t])
        )
    sb = Sandbox(data, "--latency-ms", str(args.latency_ms))
    try:
        plan, out, _ = run_cli(
            sb, f"access: plan {count:,} memberships", "plan", str(manifests), "--no-estimate"
        )
        plan.extra = {"access_line": out.strip().splitlines()[-1]}
        apply, out, _ = run_cli(
            sb, "access: apply", "apply", str(manifests), "--auto-approve", "--allow-mass-grant",
            "--allow-mass-removal", "--parallelism", str(args.parallelism), "--no-audit",
        )  # fmt: skip
        apply.extra = {"result": next(
            (line for line in out.splitlines() if line.startswith("Access updated")), "?"
        )}  # fmt: skip
        again, out, _ = run_cli(sb, "access: plan again", "plan", str(manifests), "-q")
        again.extra = {"result": out.strip().splitlines()[-1]}
        proof, out, _ = run_cli(sb, "access: verify --access", "verify", str(manifests), "--access")
        proof.extra = {"result": out.strip().splitlines()[-1]}
        review, _, err = run_cli(
            sb, "access: report access (html)", "report", "access", str(manifests),
            "--out", str(work / "access-report.html"), "--parallelism", str(args.parallelism),
        )  # fmt: skip
        review.extra = {"result": next(
            (line for line in err.splitlines() if line.startswith("Access review:")), "?"
        ).split(". Report digest")[0]}  # fmt: skip
    finally:
        sb.stop()
    return {"runs": [asdict(r) for r in (plan, apply, again, proof, review)]}


# --- other resources: Practitioners and Locations beside the patients ---------------------------


def resources_scenario(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """`--patients` patients plus `--other-resources` Practitioners and Locations (half each)
    over 3 tenants; `--change-fraction` of both move to the next tenant. Plan, apply, plan."""
    count = args.other_resources
    data = work / "resources.sqlite"
    seed(data, args.patients, 0)
    store = Store(str(data))
    others = []
    for i in range(count):
        rtype = "Practitioner" if i % 2 == 0 else "Location"
        others.append(
            {"resourceType": rtype, "id": str(uuid.uuid5(NAMESPACE, f"other-{i}")),
             "meta": {"accounts": [{"reference": f"Organization/{org_id(live_tenant(i))}"}]}}
        )  # fmt: skip
    store.bulk_insert(others)
    store.close()
    manifests = work / "resources-tenants"
    write_manifests(manifests, args.patients, args.change_fraction)
    listed: list[list[str]] = [[], [], []]
    for i, resource in enumerate(others):
        listed[wanted_tenant(i, args.change_fraction)].append(
            f"    - {resource['resourceType']}/{resource['id']}\n"
        )
    for t, name in enumerate(TENANTS):
        with (manifests / f"{name}.yaml").open("a") as fh:
            fh.write("  resources:\n")
            fh.writelines(listed[t])
    sb = Sandbox(data, "--latency-ms", str(args.latency_ms))
    try:
        plan, out, _ = run_cli(
            sb, f"resources: plan N={args.patients:,}+{count:,}", "plan", str(manifests),
            "--no-estimate",
        )  # fmt: skip
        plan.extra = {"plan_line": out.strip().splitlines()[-1]}
        apply, out, _ = run_cli(
            sb, "resources: apply", "apply", str(manifests), "--auto-approve", "--no-verify",
            "--no-audit", "--parallelism", str(args.parallelism),
        )  # fmt: skip
        apply.extra = {"result": next(
            (line for line in out.splitlines() if line.startswith("Apply complete")), "?"
        )}  # fmt: skip
        again, out, _ = run_cli(sb, "resources: plan again", "plan", str(manifests), "-q")
        again.extra = {"result": out.strip().splitlines()[-1]}
    finally:
        sb.stop()
    return {"runs": [asdict(r) for r in (plan, apply, again)]}


# --- output --------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    lines = [f"{'run':34} {'wall s':>10} {'requests':>10} {'peak RSS MB':>12}  notes"]
    for scenario, data in results.items():
        if not isinstance(data, dict) or "runs" not in data:
            continue
        lines.append(f"-- {scenario}")
        for r in data["runs"]:
            rss = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "-"
            notes = ", ".join(f"{k}={v}" for k, v in (r.get("extra") or {}).items())
            lines.append(
                f"{r['name']:34} {r['wall_s']:>10.2f} {r['requests']:>10,} {rss:>12}  {notes}"
            )
        for key in (
            "changes", "floors", "targets", "ratios", "naive", "pacing", "seed_s", "seeded",
            "latency", "run_id", "deleted", "kept",
        ):  # fmt: skip
            if key in data:
                lines.append(f"   {key}: {data[key]}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--resources-per-patient", type=int, default=4)
    parser.add_argument("--change-fraction", type=float, default=0.2)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--parallelism", type=int, default=10)
    parser.add_argument(
        "--rate-rounds",
        type=int,
        default=3,
        metavar="N",
        help="server-bound rounds on the sandbox (direct rates, apply, direct rates), each on a "
        "fresh copy; the target is their median (with --server: one round)",
    )
    parser.add_argument(
        "--job-delay-ms",
        type=float,
        default=30,
        help="time an async job waits in the sandbox's queue (Medplum runs jobs on a worker queue)",
    )
    parser.add_argument("--naive-sample", type=int, default=200)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--quick", action="store_true", help="N=500, naive sample 20")
    parser.add_argument("--rss-patients", type=int, default=0, help="also plan over this many")
    parser.add_argument("--quota", action="store_true", help="run the quota scenario too")
    parser.add_argument("--quota-patients", type=int, default=300)
    parser.add_argument("--fhir-quota", type=int, default=30_000)
    parser.add_argument("--quota-window-s", type=float, default=10.0)
    parser.add_argument(
        "--pacing-window-s",
        type=float,
        default=6.0,
        help="the pacing case's quota window (Medplum's is 60 s; scaled down to keep it short)",
    )
    parser.add_argument("--access", action="store_true", help="run the tenant access scenario")
    parser.add_argument(
        "--other-resources",
        type=int,
        default=0,
        metavar="M",
        help="also plan and apply M Practitioners/Locations beside the patients",
    )
    parser.add_argument("--access-memberships", type=int, default=1000)
    parser.add_argument(
        "--skip-main", action="store_true", help="only the --rss/--quota/--access scenarios"
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        help="run the main comparison on this Medplum instead of sandboxes (credentials from "
        "MEDPLUM_CLIENT_ID/MEDPLUM_CLIENT_SECRET); seeds fresh data, deletes only that",
    )
    parser.add_argument(
        "--keep-seeded", action="store_true", help="with --server: leave the seeded data there"
    )
    parser.add_argument(
        "--quota-client-id",
        default=os.environ.get("MEDPLUM_QUOTA_CLIENT_ID"),
        help="with --server --quota: a project admin client whose membership has a small "
        "fhirQuota (e.g. 3,000), for the quota scenario (env MEDPLUM_QUOTA_CLIENT_ID)",
    )
    parser.add_argument(
        "--quota-client-secret",
        default=os.environ.get("MEDPLUM_QUOTA_CLIENT_SECRET"),
        help="its secret (env MEDPLUM_QUOTA_CLIENT_SECRET)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args()
    sandbox_only = [f"--{k.replace('_', '-')}" for k in ("rss_patients", "access",
                    "other_resources") if getattr(args, k)]  # fmt: skip
    if args.server and args.quota and not (args.quota_client_id and args.quota_client_secret):
        parser.error("--server --quota needs --quota-client-id and --quota-client-secret")
    if args.server and sandbox_only:
        parser.error(
            f"{', '.join(sandbox_only)}: sandbox-only (they read its meters); not with --server"
        )
    if args.quick:
        args.patients, args.naive_sample = 500, 20
    install_rss_hook()
    results: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "json"}}
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        work = Path(tmp)
        if args.server and not args.skip_main:
            results["server"] = server_scenario(args, work)
        elif not args.skip_main and not args.server:
            results["main"] = main_scenario(args, work)
        if args.rss_patients:
            results["rss"] = rss_scenario(args, work)
        if args.quota and args.server:
            admin = (os.environ.get("MEDPLUM_CLIENT_ID", ""),
                     os.environ.get("MEDPLUM_CLIENT_SECRET", ""))  # fmt: skip
            quota_creds = (args.quota_client_id, args.quota_client_secret)
            results["quota"] = {
                "pacing": server_pacing_scenario(args, work, admin, quota_creds),
                "runs": [],
            }
        elif args.quota:
            results["quota"] = quota_scenario(args, work)
        if args.access:
            results["access"] = access_scenario(args, work)
        if args.other_resources:
            results["resources"] = resources_scenario(args, work)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
