"""`reconciler apply` / `verify` end to end against sandbox processes: exact server state after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.medplum.accounts import get_resource_accounts
from reconciler.medplum.client import MedplumClient
from tests.integration.helpers import (
    accounts_by_ref,
    accounts_of,
    create_org,
    create_patients,
    seed_store,
    tenant_yaml,
    write,
)
from tests.sandbox_process import ADMIN, InProcessSandbox

Cli = Any


def compartment(client: MedplumClient, patient: str) -> dict[str, list[str]]:
    return {
        f"{r['resourceType']}/{r['id']}": get_resource_accounts(r)
        for r in client.read_compartments([patient], types=["Observation", "Encounter"])
    }


def versions(client: MedplumClient) -> dict[str, str]:
    out = {}
    for rtype in ("Patient", "Observation", "Encounter", "Organization"):
        for r in client.search_all(rtype, {}):
            out[f"{rtype}/{r['id']}"] = r["meta"]["versionId"]
    return out


def test_apply_fresh_assignment_mixed_propagation_two_tenants(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Cli
) -> None:
    client = sandbox.client()
    north, south, research, legacy = (create_org(client) for _ in range(4))
    p_both, p_north, p_gone = create_patients(client, 3, accounts=[legacy], compartment=4)
    client.set_accounts(p_gone, [legacy, south], propagate=True)
    manifests = write(
        tmp_path,
        "t.yaml",
        "---\n".join(
            [
                tenant_yaml("north", north, [p_both, p_north]),
                tenant_yaml("south", south, [p_both]),
                tenant_yaml("research", research, [p_both], membership="additive", propagate=False),
            ]
        ),
    )
    code, out, err = cli(sandbox, "apply", manifests, "--auto-approve")
    assert code == 0, err
    assert out.splitlines()[-3:] == [
        "Apply complete! 3 patients updated, 4 accounts added, 1 account removed.",
        "Propagated to 12 compartment resources.",
        "Verified 12 compartment resources: 0 stragglers found, 0 repaired.",
    ]
    # Unmanaged kept first; added accounts appended in tenant load order.
    assert accounts_of(client, p_both) == [legacy, north, south, research]
    assert accounts_of(client, p_north) == [legacy, north]
    assert accounts_of(client, p_gone) == [legacy]
    # research is propagate: false: the compartment gets only the propagating tenants' accounts.
    assert set(map(tuple, compartment(client, p_both).values())) == {(legacy, north, south)}
    assert set(map(tuple, compartment(client, p_north).values())) == {(legacy, north)}
    assert set(map(tuple, compartment(client, p_gone).values())) == {(legacy,)}
    code, out, _ = cli(sandbox, "plan", manifests, "--detailed-exitcode")
    assert (code, out.splitlines()[-1]) == (0, "No changes. Live accounts match the manifests.")
    assert out.startswith("Target: ")


def test_additive_never_removes_and_deleting_a_manifest_removes_nothing(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Cli
) -> None:
    client = sandbox.client()
    auth, add = create_org(client), create_org(client)
    p1, p2 = create_patients(client, 2, accounts=[auth, add])
    both = write(
        tmp_path,
        "t.yaml",
        tenant_yaml("auth", auth, [p1])
        + "---\n"
        + tenant_yaml("add", add, [p1], membership="additive"),
    )
    code, out, _ = cli(sandbox, "apply", both, "--auto-approve")
    assert code == 0
    assert (
        out.splitlines()[-2]
        == "Apply complete! 1 patient updated, 0 accounts added, 1 account removed."
    )
    assert accounts_of(client, p2) == [add]  # authoritative removed, additive kept
    only_add = write(tmp_path, "t.yaml", tenant_yaml("add", add, [p1], membership="additive"))
    code, out, _ = cli(sandbox, "plan", only_add)
    assert (
        out
        == f"Target: {sandbox.url}/ (client sandbox-…)\n\nNo changes. Live accounts match the manifests.\n"
    )


def test_saved_plan_applied_exactly_and_stale_plan_refused(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Cli
) -> None:
    client = sandbox.client()
    org = create_org(client)
    refs = create_patients(client, 3, compartment=2)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("saved", org, refs))
    plan_file = str(tmp_path / "plan.json")
    assert cli(sandbox, "plan", manifests, "--out", plan_file)[0] == 0
    # Someone edits a planned patient: the saved plan is stale and nothing is written.
    patient = client.read_resource(*refs[1].split("/"))
    old_version = patient["meta"]["versionId"]
    patient["birthDate"] = "1999-01-01"
    new_version = client.update_resource(patient)["meta"]["versionId"]
    before = versions(client)
    code, out, err = cli(sandbox, "apply", plan_file)
    assert code == 1
    assert next(line for line in err.splitlines() if line.startswith("Error:")) == (
        f"Error: saved plan is stale: {refs[1]} changed since the plan (version {old_version}, now {new_version})"
    )
    assert versions(client) == before
    # A fresh saved plan applies exactly, without a prompt.
    assert cli(sandbox, "plan", manifests, "--out", plan_file)[0] == 0
    code, out, err = cli(sandbox, "apply", plan_file)
    assert code == 0, err
    assert "Apply complete! 3 patients updated, 3 accounts added, 0 accounts removed." in out
    assert all(a == [org] for a in accounts_by_ref(client, refs).values())


def test_saved_plan_from_another_server_and_edited_plan_refused(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sandbox.client()
    org = create_org(client)
    refs = create_patients(client, 1)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("srv", org, refs))
    plan_file = tmp_path / "plan.json"
    assert cli(sandbox, "plan", manifests, "--out", str(plan_file))[0] == 0
    data = json.loads(plan_file.read_text())
    data["server"] = "https://medplum.example:443/"
    from tests.conftest import resign

    plan_file.write_text(json.dumps(resign(data)))  # a plan signed for another server
    code, _, err = cli(sandbox, "apply", str(plan_file))
    assert code == 1
    assert err.startswith(
        f"Error: {plan_file}: the plan was made for server https://medplum.example:443/, but this run talks to"
    )
    data["changes"][0]["after"] = ["Organization/evil"]
    plan_file.write_text(json.dumps(data))
    code, _, err = cli(sandbox, "apply", str(plan_file))
    assert code == 1 and "plan_digest does not match its content" in err
    assert accounts_of(client, refs[0]) == []


def test_non_tty_without_auto_approve_is_refused(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Cli
) -> None:
    client = sandbox.client()
    org = create_org(client)
    refs = create_patients(client, 1)
    code, out, err = cli(sandbox, "apply", write(tmp_path, "t.yaml", tenant_yaml("ask", org, refs)))
    assert code == 1
    assert err.splitlines()[-1] == (
        "Error: refusing to apply: stdin is not a terminal and --auto-approve was not given; nothing was changed"
    )
    assert out == ""  # refused before reading the server: no plan printed nobody can approve
    assert accounts_of(client, refs[0]) == []


def test_propagate_cap_stragglers_repaired_by_verification(
    make_sandbox: Any, tmp_path: Path, cli: Cli
) -> None:
    sb = make_sandbox("--propagate-cap", "5")
    client = sb.client()
    org = create_org(client)
    (ref,) = create_patients(client, 1, compartment=12)
    code, out, err = cli(
        sb, "apply", write(tmp_path, "t.yaml", tenant_yaml("cap", org, [ref])), "--auto-approve"
    )
    assert code == 0, err
    assert (
        out.splitlines()[-1] == "Verified 12 compartment resources: 7 stragglers found, 7 repaired."
    )
    assert all(a == [org] for a in compartment(client, ref).values())


def test_verify_command_finds_and_repairs_drift(
    make_sandbox: Any, tmp_path: Path, cli: Cli
) -> None:
    sb = make_sandbox("--propagate-cap", "2")
    client = sb.client()
    org = create_org(client)
    (ref,) = create_patients(client, 1, compartment=4)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("drift", org, [ref]))
    assert cli(sb, "apply", manifests, "--auto-approve", "--no-verify")[0] == 0
    code, out, _ = cli(sb, "verify", manifests, "--detailed-exitcode")
    assert code == 2
    assert (
        out.splitlines()[0]
        == "Checked 4 compartment resources of 1 patient: 2 resources of 1 patient out of step."
    )
    assert cli(sb, "verify", manifests)[0] == 1
    code, out, _ = cli(sb, "verify", manifests, "--repair")
    assert code == 0 and out.splitlines()[-1] == "Repaired 2 of 2."
    code, out, _ = cli(sb, "verify", manifests, "--detailed-exitcode")
    assert code == 0 and "0 resources of 0 patients out of step" in out


def test_job_failures_reported_others_still_applied(
    make_sandbox: Any, tmp_path: Path, cli: Cli
) -> None:
    sb = make_sandbox("--job-fail-rate", "1")
    client = sb.client()
    prop, quiet = create_org(client), create_org(client)
    a, b = create_patients(client, 2)
    manifests = write(
        tmp_path,
        "t.yaml",
        tenant_yaml("prop", prop, [a])
        + "---\n"
        + tenant_yaml("quiet", quiet, [b], propagate=False),
    )
    # Async jobs fail here; small compartments would go synchronously: ask for jobs.
    code, out, _ = cli(sb, "apply", manifests, "--auto-approve", "--propagate-with", "async")
    assert code == 1
    lines = out.splitlines()
    assert lines[-3:] == [
        "Apply failed: 1 of 2 patients not updated.",
        f"  {a}: async job error: Internal server error (injected job failure)",
        "Updated: 1 patient, 1 account added, 0 accounts removed.",
    ]
    assert accounts_of(client, b) == [quiet] and accounts_of(client, a) == []
    # A re-run of plan shows exactly the remainder.
    code, out, _ = cli(sb, "plan", manifests)
    assert out.splitlines()[-2:] == [
        "Plan: 1 patient to update, 1 account to add, 0 accounts to remove.",
        "Estimated cost: 1 $set-accounts (1 synchronous, 0 async) and 0 compartment writes ≈ "
        "793 quota points ≈ 1 s at an assumed 50,000 points/min",
    ]


def test_429_faults_on_30_percent_converge(make_sandbox: Any, tmp_path: Path, cli: Cli) -> None:
    sb = make_sandbox("--fault", "429:0.3", "--retry-after", "0.01", "--random-seed", "11")
    client = sb.client(max_retries=30)
    org, legacy = create_org(client), create_org(client)
    refs = create_patients(client, 20, accounts=[legacy], compartment=2)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("faulty", org, refs))
    code, out, err = cli(sb, "apply", manifests, "--auto-approve", "--allow-mass-grant")
    assert code == 0, out + err
    assert all(a == [legacy, org] for a in accounts_by_ref(client, refs).values())
    assert sb.stats()["fault_429"] > 10
    assert cli(sb, "plan", manifests, "--detailed-exitcode")[0] == 0


def test_apply_json_events(sandbox: InProcessSandbox, tmp_path: Path, cli: Cli) -> None:
    client = sandbox.client()
    org = create_org(client)
    refs = create_patients(client, 2)
    code, out, err = cli(
        sandbox,
        "apply",
        write(tmp_path, "t.yaml", tenant_yaml("ev", org, refs)),
        "--auto-approve",
        "--format",
        "json",
    )
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == [
        "apply_start",
        "change_complete",
        "change_complete",
        "apply_summary",
    ]
    assert events[0]["patients"] == 2 and events[-1]["updated"] == 2 and events[-1]["failed"] == 0
    assert sorted(e["patient"] for e in events[1:3]) == sorted(refs)
    assert "Apply complete! 2 patients updated" in err


def test_apply_json_events_parse_line_by_line_at_parallelism_16(
    make_sandbox: Any, tmp_path: Path
) -> None:
    # Regression: worker threads once printed events with no lock, and lines interleaved on a
    # real pipe (16 of 1,713 stdout lines did not parse at the default parallelism, 136 at 32).
    data = str(tmp_path / "many.sqlite")
    org, refs = seed_store(data, patients=1_200, compartment=0)
    sb = make_sandbox(data=data)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("many", org, refs, propagate=False))
    env = {
        **os.environ,
        "MEDPLUM_BASE_URL": sb.url,
        "MEDPLUM_CLIENT_ID": ADMIN[0],
        "MEDPLUM_CLIENT_SECRET": ADMIN[1],
    }
    args = ["apply", manifests, "--auto-approve", "--allow-mass-grant", "--format", "json",
            "--parallelism", "16"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", *args, "--no-verify", "--log-format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON document
    assert len(lines) == 1_200 + 2
    assert [e["event"] for e in events].count("change_complete") == 1_200
    assert sorted(e["patient"] for e in events if e["event"] == "change_complete") == sorted(refs)
    assert events[0]["event"] == "apply_start" and events[-1]["event"] == "apply_summary"
    assert events[-1]["updated"] == 1_200


def test_account_entries_that_are_more_than_a_reference_are_kept_whole(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Cli
) -> None:
    # Hardening, point 8: a display and an identifier-only Reference were dropped from the
    # plan and from the list apply sent — lost for good.
    client = sandbox.client()
    north, legacy = create_org(client), create_org(client)
    kept = [
        {"reference": legacy, "display": "Legacy Billing"},
        {"identifier": {"system": "urn:billing", "value": "acct-7"}},
    ]
    (ref,) = create_patients(client, 1)
    patient = client.read_resource(*ref.split("/"))
    client.update_resource({**patient, "meta": {"accounts": kept}})
    obs = client.create_resource(
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
         "subject": {"reference": ref}}
    )  # fmt: skip
    manifests = write(tmp_path, "t.yaml", tenant_yaml("north", north, [ref]))
    code, out, _ = cli(sandbox, "plan", manifests, "--no-estimate")
    assert code == 0
    assert 'raw:{"identifier":{"system":"urn:billing","value":"acct-7"}}' in out  # shown as is
    assert "(unmanaged, kept)" in out
    code, out, err = cli(sandbox, "apply", manifests, "--auto-approve")
    assert code == 0, err
    after = client.read_resource(*ref.split("/"))["meta"]["accounts"]
    assert after == [*kept, {"reference": north}]
    # Propagation moved only the difference: the Observation gained north, kept its own.
    assert get_resource_accounts(client.read_resource("Observation", obs["id"]))[-1] == north
    code, out, _ = cli(sandbox, "plan", manifests, "-q")
    assert out.splitlines()[-1] == "No changes. Live accounts match the manifests."
