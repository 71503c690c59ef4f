"""The shipped CI files' structure, beside tests/workflow (which runs the workflow): who holds
which secret, pinned tool versions, bounded jobs, and the pre-commit hook's pin."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = yaml.safe_load((ROOT / "examples" / "ci" / "github-actions.yml").read_text())
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
JOBS: dict[str, Any] = WORKFLOW["jobs"]
PINNED = re.compile(r"^medplum-tenancy-reconciler/medplum-tenancy-reconciler@[0-9a-f]{40}$")
ADMIN_ONLY = ("MEDPLUM_CLIENT_ID", "MEDPLUM_CLIENT_SECRET", "RECONCILER_PLAN_KEY")


def ours(job: str) -> list[dict[str, Any]]:
    return [s for s in JOBS[job]["steps"] if "medplum-tenancy-reconciler" in str(s.get("uses"))]


def test_jobs_triggers_concurrency_and_timeouts() -> None:
    assert set(JOBS) == {"pr", "plan", "apply", "drift"}
    triggers = WORKFLOW[True] if True in WORKFLOW else WORKFLOW["on"]  # YAML reads `on` as True
    assert {"pull_request", "push", "schedule"} <= set(triggers)
    assert WORKFLOW["concurrency"]["cancel-in-progress"] is False
    assert all(isinstance(job.get("timeout-minutes"), int) for job in JOBS.values())
    assert WORKFLOW["permissions"] == {"contents": "read"}


def test_admin_secrets_live_only_in_protected_environments() -> None:
    text = yaml.safe_dump(WORKFLOW["env"]) + yaml.safe_dump(JOBS["pr"])
    for name in ADMIN_ONLY:
        assert f"secrets.{name} " not in text.replace("}}", " }}"), name
    assert "environment" not in JOBS["pr"]
    assert {JOBS[j]["environment"] for j in ("plan", "drift")} == {"medplum-plan"}
    assert JOBS["apply"]["environment"] == "medplum-production"
    assert JOBS["apply"]["needs"] == "plan"


def test_our_action_is_pinned_to_a_commit_and_summaries_are_redacted() -> None:
    for name in JOBS:
        for step in ours(name):
            assert PINNED.match(step["uses"]), step["uses"]
            options = step.get("with") or {}
            assert options.get("redact", "true") == "true", (name, step)
    assert set(ACTION["inputs"]) == {
        "command", "manifests", "plan-file", "redact", "detailed-exitcode", "summary", "output",
        "args",
    }  # fmt: skip
    assert ACTION["runs"]["using"] == "composite"


def test_pre_commit_example_pins_a_commit() -> None:
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text()
    (rev,) = re.findall(r"#\s+rev: (\S+)", hooks)
    assert re.fullmatch(r"[0-9a-f]{40}", rev), rev
    shas = {PINNED.match(s["uses"]) and s["uses"].rsplit("@", 1)[1] for j in JOBS for s in ours(j)}
    assert shas == {rev}  # one pin, the same commit, everywhere
