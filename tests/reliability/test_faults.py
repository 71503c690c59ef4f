"""Faults: 429 (with and without Retry-After), 503, latency spikes, failing and slow jobs.
Apply converges or names exactly the patients it did not update; the invariants always hold."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from tests.reliability.conftest import FIGURES
from tests.reliability.helpers import assert_invariants, build

Run = Any


def failed_patients(out: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^  (Patient/[\w-]+): ", out, re.M)}


def converge(run: Run, sb: Any, scenario: Any, *extra: str, attempts: int = 4) -> int:
    client = sb.client(max_retries=30)
    for attempt in range(1, attempts + 1):
        code, out, err = run(
            sb, "apply", scenario.manifests, "--auto-approve", "--allow-mass-grant", *extra
        )
        assert "Traceback" not in err
        behind = assert_invariants(client, scenario)
        if code == 0:
            assert behind == set(), behind
            return attempt
        assert code == 1, out + err
        # Exactly the patients reported as failed are the ones not updated.
        assert failed_patients(out) == behind, (failed_patients(out), behind)
    raise AssertionError("did not converge")


def test_429_and_503_with_retry_after_and_latency_spikes(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory(
        "--fault",
        "429:0.2",
        "--fault",
        "503:0.1",
        "--retry-after",
        "0.05",
        "--spike-ms",
        "300",
        "--spike-rate",
        "0.05",
        "--random-seed",
        "5",
    )
    scenario = build(sb.client(max_retries=30), tmp_path)
    FIGURES["fault scenarios"] += 1
    assert converge(run, sb, scenario) >= 1
    code, out, _ = run(sb, "plan", scenario.manifests, "--detailed-exitcode")
    assert (code, out.splitlines()[-1]) == (0, "No changes. Live accounts match the manifests.")
    assert out.startswith("Target: ")
    stats = sb.stats()
    assert stats["fault_429"] > 0 and stats["fault_503"] > 0 and stats["latency_spikes"] > 0


def test_429_like_medplum_without_retry_after(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory("--fault", "429:0.2", "--random-seed", "8")
    scenario = build(sb.client(max_retries=30), tmp_path)
    converge(run, sb, scenario)
    assert sb.stats()["fault_429"] > 0


def test_failing_jobs_are_reported_exactly_then_converge(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory("--job-fail-rate", "0.4", "--random-seed", "3")
    scenario = build(sb.client(), tmp_path)
    # Jobs (small compartments would otherwise go synchronously, with no job to fail).
    attempts = converge(run, sb, scenario, "--propagate-with", "async", attempts=8)
    assert attempts > 1  # some jobs failed first and were reported, then a re-run finished them
    assert sb.stats()["jobs_failed"] > 0


def test_slow_jobs_past_job_timeout(sandbox_factory: Any, run: Run, tmp_path: Path) -> None:
    sb = sandbox_factory("--job-delay-ms", "700")
    scenario = build(sb.client(), tmp_path, n=12, compartment=1)
    code, out, _ = run(
        sb,
        "apply",
        scenario.manifests,
        "--auto-approve",
        "--allow-mass-grant",
        "--job-timeout",
        "0.2",
        "--propagate-with",
        "async",
    )
    assert code == 1
    reasons = re.findall(r"^  Patient/[\w-]+: (.*)$", out, re.M)
    assert reasons and all(
        r
        == "async job not finished after --job-timeout 0.2 s (it may still complete: run plan again)"
        for r in reasons
    )
    time.sleep(0.8)  # the jobs (700 ms) finish on the server meanwhile
    assert_invariants(sb.client(), scenario)
    assert converge(run, sb, scenario) == 1


def test_job_dying_mid_propagation_is_finished_by_verification(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    # Each job writes the patient and one compartment resource, then dies (no rollback).
    sb = sandbox_factory("--job-fail-after-writes", "2")
    client = sb.client()
    scenario = build(client, tmp_path, n=12, compartment=3)
    code, out, err = run(
        sb, "apply", scenario.manifests, "--auto-approve", "--allow-mass-grant",
        "--propagate-with", "async",
    )  # fmt: skip
    assert code == 0, out + err
    changed = sum(
        1 for p in scenario.patients if set(scenario.desired[p]) != set(scenario.before[p])
    )
    assert (
        f"Verified {changed * 3} compartment resources: {changed * 2} stragglers found, {changed * 2} repaired."
        in out
    )
    assert assert_invariants(client, scenario) == set()
    for resource in client.read_compartments(scenario.patients):
        patient = resource["subject"]["reference"]
        from reconciler.medplum.accounts import get_resource_accounts

        assert set(get_resource_accounts(resource)) == set(scenario.desired[patient])
