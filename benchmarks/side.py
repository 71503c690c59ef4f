"""The side scenarios: tenant access (`spec.access` over many memberships) and other
resources (Practitioners and Locations beside the patients)."""

from __future__ import annotations

import argparse
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    NAMESPACE,
    TENANTS,
    Sandbox,
    live_tenant,
    org_id,
    run_cli,
    seed,
    wanted_tenant,
    write_manifests,
)
from reconciler.sandbox.store import Store


def last_line(text: str) -> str:
    """A command's result line: the last line it printed."""
    return text.strip().splitlines()[-1]


def line_starting(text: str, prefix: str) -> str:
    """The first line printed that starts with `prefix`, or "?"."""
    return next((line for line in text.splitlines() if line.startswith(prefix)), "?")


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
        plan.extra = {"access_line": last_line(out)}
        apply, out, _ = run_cli(
            sb, "access: apply", "apply", str(manifests), "--auto-approve", "--allow-mass-grant",
            "--allow-mass-removal", "--parallelism", str(args.parallelism), "--no-audit",
        )  # fmt: skip
        apply.extra = {"result": line_starting(out, "Access updated")}
        again, out, _ = run_cli(sb, "access: plan again", "plan", str(manifests), "-q")
        again.extra = {"result": last_line(out)}
        proof, out, _ = run_cli(sb, "access: verify --access", "verify", str(manifests), "--access")
        proof.extra = {"result": last_line(out)}
        review, _, err = run_cli(
            sb, "access: report access (html)", "report", "access", str(manifests),
            "--out", str(work / "access-report.html"), "--parallelism", str(args.parallelism),
        )  # fmt: skip
        review.extra = {"result": line_starting(err, "Access review:").split(". Report digest")[0]}
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
        plan.extra = {"plan_line": last_line(out)}
        apply, out, _ = run_cli(
            sb, "resources: apply", "apply", str(manifests), "--auto-approve", "--no-verify",
            "--no-audit", "--parallelism", str(args.parallelism),
        )  # fmt: skip
        apply.extra = {"result": line_starting(out, "Apply complete")}
        again, out, _ = run_cli(sb, "resources: plan again", "plan", str(manifests), "-q")
        again.extra = {"result": last_line(out)}
    finally:
        sb.stop()
    return {"runs": [asdict(r) for r in (plan, apply, again)]}
