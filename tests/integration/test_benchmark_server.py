"""`benchmarks/reconcile.py --server URL` against a sandbox standing in for any Medplum: it
seeds over HTTP, runs the comparison, deletes what it seeded and touches nothing else."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import remote
from reconciler.cli import main as cli
from tests.sandbox_process import ADMIN, InProcessSandbox

ROOT = Path(__file__).resolve().parents[2]


def snapshot(data: Path) -> dict[tuple[str, str], str]:
    with sqlite3.connect(data) as db:
        return {(t, i): v for t, i, v in db.execute("SELECT type, id, version_id FROM resources")}


def test_the_benchmark_runs_on_a_server_it_does_not_own_and_leaves_it_as_found(
    tmp_path: Path,
) -> None:
    pytest.importorskip("pymedplum")
    data = tmp_path / "server.sqlite"
    assert cli(["sandbox", "seed", "--data", str(data)]) == 0
    sb = InProcessSandbox(data=str(data)).start()
    before = snapshot(data)  # with the clients the server registered on start
    try:
        proc = subprocess.run(
            [sys.executable, "benchmarks/reconcile.py", "--server", sb.url,
             "--patients", "60", "--resources-per-patient", "2", "--naive-sample", "12"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "MEDPLUM_CLIENT_ID": ADMIN[0], "MEDPLUM_CLIENT_SECRET": ADMIN[1]},
        )  # fmt: skip
    finally:
        sb.stop()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {
        line[:38].strip(): line[38:].split()
        for line in proc.stdout.splitlines()
        if line.startswith(("ours:", "naive"))
    }
    assert sorted(rows) == sorted([
        "ours: plan", "ours: plan --no-estimate", "ours: apply --no-verify", "ours: plan again",
        "ours: verify", "naive read loop", "naive apply loop",
    ])  # fmt: skip
    for name, (_, requests, *_) in rows.items():
        assert int(requests.replace(",", "")) > 0, name  # counted on the client side
    # 3 Organizations + 60 patients x (1 + 2) for ours; 3 + 4 x 20 x 3 for the floors' fresh
    # patients (sync and async, before and after the apply); 3 + 12 x 3 for the naive loop's
    assert "   seeded: 183\n" in proc.stdout
    assert "   deleted: 465\n" in proc.stdout
    floors = next(line for line in proc.stdout.splitlines() if line.startswith("   targets: "))
    for target in ("plan_work_over_listing (<= 1.5)", "ours_over_direct_rate (>= 0.9)"):
        assert f"'{target}': " in floors  # the floors measured on that server, as ratios
    assert "median_ms" in proc.stdout  # the per-request latency it measured
    after = snapshot(data)
    # Everything that was there is there, at the same version; what is new is only the
    # server's own job records and the apply's audit record (the lock is released).
    assert {k: after.get(k) for k in before} == before
    assert sorted({t for t, _ in set(after) - set(before)}) == ["AsyncJob", "AuditEvent"]


def test_a_server_that_only_gives_a_location_still_yields_the_created_id() -> None:
    answers: list[dict[str, Any]] = [
        {"response": {"status": "201 Created", "location": "Patient/abc/_history/1"}},
        {"response": {"status": "201", "location": "https://x.test/fhir/R4/Patient/def"}},
        {"resource": {"resourceType": "Patient", "id": "ghi"}, "response": {"status": "201"}},
    ]
    assert [remote.created_id(a) for a in answers] == ["abc", "def", "ghi"]


def test_the_quota_scenario_runs_on_a_server_given_a_quota_limited_client(tmp_path: Path) -> None:
    # A sandbox stands in for a Medplum with a second admin client whose membership has
    # fhirQuota 3,000 (a 2 s window to keep it short). The benchmark reads the quota and window
    # from the RateLimit header, computes the cheapest schedule from the cost model and prints
    # ours against it.
    data = tmp_path / "server.sqlite"
    sb = InProcessSandbox(args=(
        "--client", ":".join([*ADMIN, "admin"]), "--client", "bench-quota:quota-secret:admin",
        "--client-quota", "bench-quota:3000", "--quota-window-s", "2",
    ), data=str(data)).start()  # fmt: skip
    report = tmp_path / "bench.json"
    try:
        proc = subprocess.run(
            [sys.executable, "benchmarks/reconcile.py", "--server", sb.url, "--skip-main",
             "--quota", "--quota-client-id", "bench-quota", "--json", str(report)],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "MEDPLUM_CLIENT_ID": ADMIN[0], "MEDPLUM_CLIENT_SECRET": ADMIN[1],
                 "MEDPLUM_QUOTA_CLIENT_SECRET": "quota-secret"},
        )  # fmt: skip
        left = sb.stats()
    finally:
        sb.stop()
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    import json

    pacing = json.loads(report.read_text())["quota"]["pacing"]
    assert (pacing["quota_points"], pacing["window_s"]) == (3000, 2.0)  # read from the header
    assert pacing["cheapest_points"] == 10 * (120 + 100 * 3)  # 10 synchronous calls, k = 3
    assert pacing["failed"] is False and pacing["429s_seen_by_client"] == 0
    assert pacing["metered_over_floor (<= 1.2)"] > 0
    assert [r["name"] for r in pacing["runs"]] == [
        "ours: pacing, admin", "ours: pacing, quota client"
    ]  # fmt: skip
    assert "   pacing: {" in proc.stdout
    assert left["throttled"] == 0  # nothing it sent was refused
