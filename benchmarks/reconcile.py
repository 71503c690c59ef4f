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
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import floors, server_bound  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    FLOOR_KINDS,
    FLOOR_TO,
    TENANTS,
    Run,
    Sandbox,
    events,
    floor_patient_id,
    install_rss_hook,
    org_id,
    patient_id,
    run_cli,
    seed,
    seed_floor_patients,
    write_manifests,
)  # fmt: skip
from benchmarks.naive import naive  # noqa: E402
from benchmarks.on_server import server_scenario  # noqa: E402
from benchmarks.quota import quota_scenario, server_pacing_scenario  # noqa: E402
from benchmarks.server_bound import one_round, work_s  # noqa: E402
from benchmarks.side import access_scenario, resources_scenario  # noqa: E402

# --- scenarios ---------------------------------------------------------------------------------


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
