"""The shipped CI workflow (examples/ci/github-actions.yml): its structure is the contract —
reviewed plans applied exactly, no unredacted plan in a job summary, pinned tool, bounded jobs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = yaml.safe_load((ROOT / "examples" / "ci" / "github-actions.yml").read_text())
JOBS: dict[str, Any] = WORKFLOW["jobs"]


def runs(job: str) -> list[str]:
    return [step["run"] for step in JOBS[job]["steps"] if "run" in step]


def uses(job: str, action: str) -> list[dict[str, Any]]:
    return [s for s in JOBS[job]["steps"] if str(s.get("uses", "")).startswith(action)]


def test_jobs_triggers_concurrency_and_timeouts() -> None:
    assert set(JOBS) == {"pr-plan", "plan", "apply", "drift"}
    triggers = WORKFLOW[True] if True in WORKFLOW else WORKFLOW["on"]  # YAML reads `on` as True
    assert {"pull_request", "push", "schedule"} <= set(triggers)
    assert WORKFLOW["concurrency"]["cancel-in-progress"] is False
    assert all(isinstance(job.get("timeout-minutes"), int) for job in JOBS.values())
    assert WORKFLOW["permissions"] == {"contents": "read"}


def test_nothing_unredacted_reaches_a_job_summary() -> None:
    for name in JOBS:
        for script in runs(name):
            for line in script.splitlines():
                if "GITHUB_STEP_SUMMARY" in line and "reconciler" in line:
                    assert "--redact" in line, (name, line)
                if line.strip().startswith("cat ") and "GITHUB_STEP_SUMMARY" in line:
                    produced = [s for s in script.splitlines() if "> plan.md" in s]
                    assert produced and all("--redact" in s for s in produced), (name, script)


def test_apply_uses_the_exact_artifact_the_plan_job_made_after_review() -> None:
    apply = JOBS["apply"]
    assert apply["needs"] == "plan" and apply["environment"] == "medplum-production"
    (upload,) = uses("plan", "actions/upload-artifact")
    (download,) = uses("apply", "actions/download-artifact")
    assert upload["with"]["name"] == download["with"]["name"] == "tenancy-plan-${{ github.sha }}"
    assert upload["with"]["retention-days"] <= 7
    assert any("--out plan.json" in r for r in runs("plan"))
    assert any(re.search(r"reconciler show plan\.json --redact", r) for r in runs("plan"))
    apply_runs = runs("apply")
    assert any("reconciler apply plan.json" in r for r in apply_runs)
    assert not any("reconciler plan" in r for r in apply_runs)  # no re-plan after approval
    head_check = next(r for r in apply_runs if "origin/main" in r)
    assert "GITHUB_SHA" in head_check and "exit 1" in head_check


def test_pinned_tool_and_separate_clients() -> None:
    spec = WORKFLOW["env"]["RECONCILER_SPEC"]
    assert re.search(r"@ git\+https://\S+@v\d+\.\d+\.\d+$", spec), spec
    for name in JOBS:
        assert any(r.strip() == 'pip install "$RECONCILER_SPEC"' for r in runs(name)), name
    assert "READ_CLIENT" in JOBS["pr-plan"]["env"]["MEDPLUM_CLIENT_ID"]
    assert "READ_CLIENT" in JOBS["plan"]["env"]["MEDPLUM_CLIENT_ID"]
    assert "READ_CLIENT" not in JOBS["apply"]["env"]["MEDPLUM_CLIENT_ID"]
    assert WORKFLOW["env"]["RECONCILER_REDACT_KEY"] == "${{ secrets.RECONCILER_REDACT_KEY }}"
    assert WORKFLOW["env"]["RECONCILER_PLAN_KEY"] == "${{ secrets.RECONCILER_PLAN_KEY }}"


def test_scheduled_drift_check() -> None:
    drift = runs("drift")
    assert any("reconciler plan tenants/ --detailed-exitcode" in r for r in drift)
    assert any("reconciler verify tenants/ --access --detailed-exitcode" in r for r in drift)
