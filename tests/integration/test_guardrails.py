"""Guard rails against sandbox processes: removal guard, apply lock, audit record, import, hook."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.apply.lock import LOCK_SYSTEM, LOCK_VALUE, ApplyLock
from reconciler.medplum.client import MedplumClient
from tests.integration.helpers import (
    accounts_by_ref,
    accounts_of,
    create_org,
    create_patients,
    tenant_yaml,
    write,
)
from tests.sandbox_process import ADMIN, SandboxProcess

ROOT = Path(__file__).resolve().parents[2]
Cli = Any


def locks(client: MedplumClient) -> list[dict[str, Any]]:
    return list(client.search_all("Basic", {"identifier": f"{LOCK_SYSTEM}|{LOCK_VALUE}"}))


def patient_versions(client: MedplumClient, refs: list[str]) -> list[str]:
    return [client.read_resource(*r.split("/"))["meta"]["versionId"] for r in refs]


def test_mass_removal_warns_in_plan_and_refuses_apply(
    make_sandbox: Any, tmp_path: Path, cli: Cli
) -> None:
    sb = make_sandbox()
    client = sb.client()
    org = create_org(client)
    refs = create_patients(client, 14, accounts=[org])
    manifests = write(tmp_path, "t.yaml", tenant_yaml("clinic", org, refs[:1]))
    code, out, _ = cli(sb, "plan", manifests)
    assert code == 0
    assert out.splitlines()[2] == (
        "Warning: tenant 'clinic' would lose 13 of its 14 current members (93 %); "
        "apply will refuse without --allow-mass-removal"
    )
    before = patient_versions(client, refs)
    code, _, err = cli(sb, "apply", manifests, "--auto-approve")
    assert code == 1
    assert err.splitlines()[-1] == (
        "Error: refusing to apply: tenant 'clinic' would lose 13 of its 14 current members (93 %) "
        "(review the plan; --allow-mass-removal to proceed); nothing was changed"
    )
    assert patient_versions(client, refs) == before and locks(client) == []
    # A saved plan carries the guard too.
    plan_file = str(tmp_path / "plan.json")
    cli(sb, "plan", manifests, "--out", plan_file)
    assert cli(sb, "apply", plan_file)[0] == 1
    assert patient_versions(client, refs) == before
    # --max-removals on plan is a diagnostic of that run, on stderr, never part of the saved
    # plan: the plan's changes and warnings are the same with or without the flag.
    capped = str(tmp_path / "capped.json")
    code, out, err = cli(sb, "plan", manifests, "--out", capped, "--max-removals", "5")
    assert code == 0 and "--max-removals" not in out
    assert (
        "Warning: the plan removes 13 accounts, more than --max-removals 5; apply will refuse"
        in err
    )
    saved, with_cap = (json.loads(Path(f).read_text()) for f in (plan_file, capped))
    assert "max-removals" not in json.dumps(with_cap)
    assert with_cap["changes"] == saved["changes"] and with_cap["warnings"] == saved["warnings"]
    code, _, err = cli(
        sb, "apply", manifests, "--auto-approve", "--allow-mass-removal", "--max-removals", "5"
    )
    assert code == 1 and "the plan removes 13 accounts, more than --max-removals 5" in err
    code, out, _ = cli(sb, "apply", manifests, "--auto-approve", "--allow-mass-removal")
    assert (
        code == 0
        and "Apply complete! 13 patients updated, 0 accounts added, 13 accounts removed." in out
    )
    assert [accounts_of(client, r) for r in refs] == [[org]] + [[]] * 13


def test_lock_held_fails_fast_then_waits(make_sandbox: Any, tmp_path: Path, cli: Cli) -> None:
    sb = make_sandbox()
    client = sb.client()
    org = create_org(client)
    refs = create_patients(client, 2)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("locked", org, refs))
    other = ApplyLock(sb.client(), plan_digest="sha256:other")
    other.acquire()
    assert other.info is not None
    code, _, err = cli(sb, "apply", manifests, "--auto-approve")
    assert code == 1
    error = next(line for line in err.splitlines() if line.startswith("Error:"))
    assert error.startswith(
        f"Error: another apply holds the lock (since {other.info.since}, by {other.holder}, until "
    )
    assert accounts_of(client, refs[0]) == []
    import threading

    threading.Timer(0.6, other.release).start()
    code, _out, err = cli(sb, "apply", manifests, "--auto-approve", "--lock-timeout", "10s")
    assert code == 0, err
    assert all(a == [org] for a in accounts_by_ref(client, refs).values())
    assert locks(client) == []  # released after success


def test_expired_lock_taken_over_and_force_unlock(
    make_sandbox: Any, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = make_sandbox()
    client = sb.client()
    org = create_org(client)
    refs = create_patients(client, 1)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("expired", org, refs))
    stale = ApplyLock(sb.client(), plan_digest="sha256:old", ttl_s=0.05)
    stale.acquire()
    stale._stop.set()  # the holder "crashed": nobody renews it
    time.sleep(1.1)  # past its TTL on the server's clock (a Date header has 1 s resolution)
    code, _, err = cli(sb, "apply", manifests, "--auto-approve")
    assert code == 0, err
    assert "took over an expired apply lock" in err
    assert locks(client) == []
    held = ApplyLock(sb.client(), plan_digest="sha256:held")
    held.acquire()
    held._stop.set()
    assert held.info is not None
    # A live lock (renewed within its TTL) names its holder and is refused without --force.
    code, out, err = cli(sb, "force-unlock", held.info.id)
    assert (code, out) == (1, "")
    assert err.splitlines()[-1].startswith(
        f"Error: Basic/{held.info.id} is live: held by {held.holder}, last renewed "
    )
    assert err.splitlines()[-1].endswith(
        "(within its TTL of 600 s), so an apply may still be writing; give --force to remove it "
        "anyway (that apply then stops at its next batch)"
    )
    assert len(locks(client)) == 1
    # It is live (renewed within its TTL): --force alone is not enough, a 'yes' is needed too.
    code, out, err = cli(sb, "force-unlock", held.info.id, "--force")
    assert (code, out) == (1, "") and "It is LIVE" in err
    assert err.splitlines()[-1] == (
        f"Error: kept the apply lock Basic/{held.info.id}; nothing was changed"
    )
    assert len(locks(client)) == 1
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\n"))
    code, out, _ = cli(sb, "force-unlock", held.info.id, "--force")
    assert code == 0 and out.startswith(f"Removed the apply lock Basic/{held.info.id} (held since")
    assert locks(client) == []
    code, _, err = cli(sb, "force-unlock", create_org(client).split("/")[1], "--force")
    assert code == 1


def test_lock_released_after_failure_and_lock_false_warns(
    make_sandbox: Any, tmp_path: Path, cli: Cli
) -> None:
    sb = make_sandbox("--job-fail-rate", "1")
    client = sb.client()
    org = create_org(client)
    refs = create_patients(client, 2)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("failing", org, refs))
    assert cli(sb, "apply", manifests, "--auto-approve", "--propagate-with", "async")[0] == 1
    assert locks(client) == []
    code, _, err = cli(
        sb, "apply", manifests, "--auto-approve", "--lock=false", "--propagate-with", "async"
    )
    assert code == 1 and "apply lock disabled (--lock=false)" in err


def _apply_process(sb: SandboxProcess, manifests: str, *extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "MEDPLUM_BASE_URL": sb.url,
        "MEDPLUM_CLIENT_ID": ADMIN[0],
        "MEDPLUM_CLIENT_SECRET": ADMIN[1],
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "apply",
            manifests,
            "--auto-approve",
            "--allow-mass-grant",  # these tests are about locks and signals, not the guard
            "--log-format",
            "json",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_concurrent_applies_never_both_write(make_sandbox: Any, tmp_path: Path) -> None:
    sb = make_sandbox("--latency-ms", "15")
    client = sb.client()
    org = create_org(client)
    refs = create_patients(client, 20)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("race", org, refs))
    first, second = _apply_process(sb, manifests), _apply_process(sb, manifests)
    results = [
        (
            p.wait(timeout=120),
            p.stdout.read() if p.stdout else "",
            p.stderr.read() if p.stderr else "",
        )
        for p in (first, second)
    ]
    wrote = [r for r in results if "Apply complete! 20 patients updated" in r[1]]
    assert len(wrote) == 1
    other = next(r for r in results if r is not wrote[0])
    # The other run either found the lock held, or planned after (or while) the first wrote and
    # then, holding the lock, found every patient already done: it wrote nothing either way.
    assert (
        (other[0] == 1 and "another apply holds the lock" in other[2])
        or (other[0] == 0 and "No changes. Live accounts match the manifests." in other[1])
        or (other[0] == 0 and "Apply complete! 0 patients updated" in other[1])
    ), other
    assert all(a == [org] for a in accounts_by_ref(client, refs).values()) and locks(client) == []


def test_ctrl_c_waits_for_in_flight_releases_lock_exits_130(
    make_sandbox: Any, tmp_path: Path, cli: Any
) -> None:
    sb = make_sandbox("--latency-ms", "40", "--job-delay-ms", "100")
    client = sb.client()
    org = create_org(client)
    refs = create_patients(client, 60)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("interrupted", org, refs))
    proc = _apply_process(sb, manifests, "--parallelism", "2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not locks(client):
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)
    out = proc.stdout.read() if proc.stdout else ""
    assert code == 130, out
    assert "Apply interrupted:" in out
    assert locks(client) == []
    done = sum(1 for a in accounts_by_ref(client, refs).values() if a == [org])
    assert 0 < done < 60
    # Convergent: the next plan shows exactly the remainder.
    _, plan_out, _ = cli(sb, "plan", manifests, "-q")
    assert (
        plan_out.splitlines()[-2]
        == f"Plan: {60 - done} patients to update, {60 - done} accounts to add, 0 accounts to remove."
    )


def test_audit_record(
    make_sandbox: Any, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = make_sandbox()
    client = sb.client()
    org = create_org(client)
    refs = create_patients(client, 3)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("audited", org, refs))
    monkeypatch.setenv("GITHUB_SHA", "abc123")
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/tenancy")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    plan_file = str(tmp_path / "plan.json")
    cli(sb, "plan", manifests, "--out", plan_file)
    digest = json.loads(Path(plan_file).read_text())["plan_digest"]
    assert cli(sb, "apply", plan_file)[0] == 0
    events = list(client.search_all("AuditEvent", {}))
    assert len(events) == 1
    event = events[0]
    details = {d["type"]: d["valueString"] for d in event["entity"][0]["detail"]}
    assert details["plan_digest"] == digest
    assert details["manifests_digest"].startswith("sha256:")
    assert details["patients_updated"] == "3" and details["accounts_added"] == "3"
    assert details["patients_failed"] == "0"
    assert details["git_commit"] == "abc123"
    assert details["ci_run_url"] == "https://github.com/acme/tenancy/actions/runs/42"
    assert details["tool_version"].startswith("medplum-tenancy-reconciler ")
    assert event["outcome"] == "0"
    assert not any(r.split("/")[1] in json.dumps(event) for r in refs)  # counts only, no PHI
    # --no-audit writes none; no writes, no record.
    cli(sb, "apply", manifests, "--auto-approve", "--no-audit")
    assert len(list(client.search_all("AuditEvent", {}))) == 1


def test_import_then_plan_shows_no_changes(make_sandbox: Any, tmp_path: Path, cli: Cli) -> None:
    sb = make_sandbox()
    client = sb.client()
    org = create_org(client, name="Eastside Clinic")
    refs = create_patients(client, 25, accounts=[org], mrn_prefix="east")
    (no_mrn,) = create_patients(client, 1, accounts=[org])
    code, out, err = cli(sb, "import", "--account", org, "--identifier-system", "urn:test:mrn")
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert out.startswith("# Editor validation: `reconciler schema tenant > tenant.schema.json`")
    assert doc["metadata"]["name"] == "eastside-clinic"
    assert len(doc["spec"]["patients"]) == 26
    assert doc["spec"]["patients"][0] == {"identifier": "urn:test:mrn|east-0"}
    path = write(tmp_path, "east.yaml", out)
    assert cli(sb, "validate", path)[0] == 0
    code, out, _ = cli(sb, "plan", path, "--detailed-exitcode")
    assert (code, out.splitlines()[-1]) == (0, "No changes. Live accounts match the manifests.")
    assert out.startswith("Target: ")
    # A duplicated identifier elsewhere on the server: fall back to ids.
    create_patients(client, 1, mrn_prefix="east")
    code, out, _ = cli(
        sb, "import", "--account", org, "--identifier-system", "urn:test:mrn", "--name", "East"
    )
    doc = yaml.safe_load(out)
    assert doc["metadata"]["name"] == "east" and doc["spec"]["patients"][0] == refs[0]
    assert no_mrn in doc["spec"]["patients"]
    empty = create_org(client, name="Nobody Here")
    code, out, err = cli(sb, "import", "--account", empty)
    assert (code, out) == (1, "")
    assert f"Error: {empty} has no member patients; there is nothing to import" in err


def test_pre_commit_hook_validates_the_whole_directory(tmp_path: Path) -> None:
    # As pre-commit runs it: entry + args, no file names (pass_filenames: false), from the
    # repository root — so a duplicate account across two files is caught even when only one
    # of them changed (it passed with file names: pre-commit gave only the changed file).
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "reconciler-validate")
    assert hook["language"] == "python" and hook["pass_filenames"] is False
    assert hook["args"] == ["tenants/"] and hook["require_serial"] is True
    entry = hook["entry"].split()
    assert entry[0] == "reconciler"
    exe = Path(sys.executable).parent / "reconciler"
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    for example in (ROOT / "examples" / "tenants").glob("*.yaml"):
        (tenants / example.name).write_text(example.read_text())
    cmd = [str(exe), *entry[1:], *hook["args"]]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == "3 tenants in 3 files are valid.\n"
    copy = (tenants / "northside.yaml").read_text().replace("name: northside", "name: copy")
    (tenants / "zz-copy.yaml").write_text(copy)
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "is already declared by tenant 'northside'" in result.stderr


def test_mass_grant_guard_for_patients(make_sandbox: Any, tmp_path: Path, cli: Cli) -> None:
    # A mistyped additive search that would put 14 new patients into a 4-patient tenant.
    sb = make_sandbox()
    client = sb.client()
    org = create_org(client)
    members = create_patients(client, 4, accounts=[org])
    strangers = create_patients(client, 14, family="Stranger")
    manifests = write(
        tmp_path,
        "t.yaml",
        tenant_yaml("clinic", org, [*members, '{search: "name=Stranger"}'], membership="additive"),
    )
    code, out, _ = cli(sb, "plan", manifests)
    assert code == 0 and out.splitlines()[2] == (
        "Warning: tenant 'clinic' would gain 14 patients over its 4 current members (350 %); "
        "apply will refuse without --allow-mass-grant"
    )
    before = patient_versions(client, strangers)
    code, _, err = cli(sb, "apply", manifests, "--auto-approve")
    assert code == 1 and err.splitlines()[-1] == (
        "Error: refusing to apply: tenant 'clinic' would gain 14 patients over its 4 current "
        "members (350 %) (review the plan; --allow-mass-grant to proceed); nothing was changed"
    )
    plan_file = str(tmp_path / "plan.json")
    assert cli(sb, "plan", manifests, "--out", plan_file)[0] == 0
    assert json.loads(Path(plan_file).read_text())["guard"]["mass_grants"] == [
        {"tenant": "clinic", "add": 14, "members": 4}
    ]
    assert cli(sb, "apply", plan_file)[0] == 1  # a saved plan carries the guard
    code, _, err = cli(sb, "apply", manifests, "--auto-approve", "--allow-mass-grant",
                       "--max-grants", "10")  # fmt: skip
    assert (
        code == 1
        and "the plan grants 14 (accounts added and access entries), more than --max-grants 10"
        in err
    )
    assert patient_versions(client, strangers) == before and locks(client) == []
    code, out, _ = cli(sb, "apply", manifests, "--auto-approve", "--allow-mass-grant")
    assert code == 0 and "Apply complete! 14 patients updated, 14 accounts added" in out
