"""The main comparison on any Medplum (`--server URL`): seeded over HTTP, requests counted by
the clients, only what was seeded deleted (benchmarks/remote.py)."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import floors, server_bound
from benchmarks.harness import (
    FLOOR_KINDS,
    TENANTS,
    Remote,
    Run,
    live_tenant,
    run_cli,
    write_manifests,
)
from benchmarks.naive import naive, naive_sample
from benchmarks.server_bound import one_round, work_s


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
