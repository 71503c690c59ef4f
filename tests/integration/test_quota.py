"""Medplum's FHIR quota in the sandbox, and an apply that paces itself under it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.medplum.accounts import get_resource_accounts
from reconciler.medplum.errors import HTTPStatusError
from reconciler.medplum.ratelimit import parse_ratelimit
from tests.integration.helpers import (
    create_org,
    create_patients,
    run_cli,
    seed_store,
    tenant_yaml,
    write,
)


def fhir_remaining(response: httpx.Response) -> int:
    return parse_ratelimit(response.headers["RateLimit"])["fhirInteractions"].remaining


def test_quota_costs_headers_and_429(make_sandbox: Any) -> None:
    sb = make_sandbox("--fhir-quota", "300", "--quota-window-s", "4")
    token = sb.token()
    http = httpx.Client(
        base_url=f"{sb.url}/fhir/R4/",
        headers={"Authorization": f"Bearer {token}", "X-Medplum": "extended"},
    )
    r = http.post("Patient", json={"resourceType": "Patient"})
    assert fhir_remaining(r) == 200  # a write costs 100
    pid = r.json()["id"]
    assert fhir_remaining(http.get(f"Patient/{pid}")) == 199  # a read 1
    assert fhir_remaining(http.get("Patient")) == 179  # a search 20
    http.post("Patient", json={"resourceType": "Patient"})
    http.post("Patient", json={"resourceType": "Patient"})
    r = http.get(f"Patient/{pid}")  # past the quota even reads answer 429
    assert r.status_code == 429 and "Retry-After" not in r.headers
    body = r.json()
    assert body["id"] == "too-many-requests" and body["issue"][0]["code"] == "throttled"
    wait_ms = json.loads(body["issue"][0]["diagnostics"])["_msBeforeNext"]
    assert 0 < wait_ms <= 4000
    assert fhir_remaining(r) == 0
    time.sleep(wait_ms / 1000 + 0.05)
    assert http.get(f"Patient/{pid}").status_code == 200
    assert parse_ratelimit(r.headers["RateLimit"])["requests"].remaining > 0


def test_sync_set_accounts_cut_by_quota_commits_part_and_verify_repairs(
    make_sandbox: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sb = make_sandbox("--fhir-quota", "1000", "--quota-window-s", "2")
    client = sb.client(max_retries=0)
    org = create_org(client)
    time.sleep(2.05)
    (ref,) = create_patients(client, 1, compartment=6)
    time.sleep(2.05)
    # 1000 points: 624 spent; the patient + 3 of its 6 resources fit before the cut.
    client.search("Patient", {"_count": "1"})  # 20
    for _ in range(4):
        client.read_resource(*ref.split("/"))  # 4
    for _ in range(6):
        client.create_resource({"resourceType": "Basic", "code": {"text": "burn"}})  # 600
    with pytest.raises(HTTPStatusError) as info:
        client.set_accounts(ref, [org], propagate=True)
    assert info.value.status == 429
    time.sleep(2.05)
    assert get_resource_accounts(client.read_resource(*ref.split("/"))) == [org]  # committed
    members = [get_resource_accounts(r) for r in client.read_compartments([ref])]
    assert sorted(members) == [[], [], [], [org], [org], [org]]  # and only part of the compartment
    # Re-running the same $set-accounts does not repair it (only the difference propagates) ...
    client.set_accounts(ref, [org], propagate=True)
    assert sorted(get_resource_accounts(r) for r in client.read_compartments([ref])) == sorted(
        members
    )
    # ... verification finds the stragglers and repairs them.
    manifests = write(tmp_path, "t.yaml", tenant_yaml("quota", org, [ref]))
    time.sleep(2.05)
    code, out, err = run_cli(sb, monkeypatch, capsys, "verify", manifests, "--repair")
    assert code == 0, err
    assert (
        out.splitlines()[0]
        == "Checked 6 compartment resources of 1 patient: 3 resources of 1 patient out of step."
    )
    assert all(get_resource_accounts(r) == [org] for r in client.read_compartments([ref]))


def test_async_job_sleeps_until_the_window_resets(make_sandbox: Any) -> None:
    sb = make_sandbox("--fhir-quota", "700", "--quota-window-s", "1")
    client = sb.client(max_retries=20)
    org = create_org(client)
    time.sleep(1.05)
    (ref,) = create_patients(client, 1, compartment=5)
    time.sleep(1.05)
    started = time.monotonic()  # before the window's first request
    for _ in range(3):
        client.create_resource({"resourceType": "Basic", "code": {"text": "burn"}})  # 300
    result = client.set_accounts(ref, [org], propagate=True, prefer_async=True)
    job = client.wait_for_async_job(result, timeout=20)
    assert job["status"] == "completed" and job["output"]["parameter"][0]["valueInteger"] == 6
    assert time.monotonic() - started >= 1.0  # 600 points of writes, 400 left: a second window
    assert all(get_resource_accounts(r) == [org] for r in client.read_compartments([ref]))


def test_apply_bigger_than_a_window_converges_at_the_quota_pace(
    make_sandbox: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 60 patients x (1 + 4 compartment resources) = 300 writes = 30,000 points; ~1/3 a window.
    data = str(tmp_path / "quota.sqlite")
    org, refs = seed_store(data, patients=60, compartment=4)
    sb = make_sandbox("--fhir-quota", "11000", "--quota-window-s", "1.5", data=data)
    client = sb.client(max_retries=20)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("paced", org, refs))
    code, out, err = run_cli(sb, monkeypatch, capsys, "apply", manifests, "--auto-approve")
    assert code == 0, out + err
    assert "Apply complete! 60 patients updated, 60 accounts added, 0 accounts removed." in out
    assert (
        out.splitlines()[-1]
        == "Verified 240 compartment resources: 0 stragglers found, 0 repaired."
    )
    assert any(json.loads(line).get("event") == "waiting for quota" for line in err.splitlines())
    time.sleep(1.6)
    assert all(get_resource_accounts(client.read_resource(*r.split("/"))) == [org] for r in refs)
