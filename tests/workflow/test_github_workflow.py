"""The shipped workflow, executed (issue 27): examples/ci/github-actions.yml run job by job for a
pull request, a push to main and the daily schedule, in a git repository holding `tenants/`,
against a sandbox with the demo patients — installing the tool through our own action from the
working tree. Asserted: the exit codes that gate, the plan applied byte for byte as uploaded,
drift failing only after both checks ran, no seeded MRN, patient id or name in any log line or
job summary, and no admin credential anywhere in a pull request's job."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main
from reconciler.sandbox import seed as seeding
from reconciler.sandbox.store import Store
from tests.sandbox_process import InProcessSandbox
from tests.workflow.runner import Environment, Event, JobRun, Runner, copy_working_tree

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "ci" / "github-actions.yml"
EXAMPLES = ROOT / "examples" / "tenants"
ADMIN = ("tenancy-admin", "adm-" + secrets.token_hex(16))
READER = ("tenancy-reader", "rdr-" + secrets.token_hex(16))
GIT = ["git", "-c", "user.name=Dev", "-c", "user.email=dev@clinic.example"]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def action_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_working_tree(ROOT, tmp_path_factory.mktemp("action"))


class World:
    """A repository, a sandbox with the demo data, and the runner's secrets."""

    def __init__(self, tmp: Path, start: Callable[..., InProcessSandbox], action_dir: Path) -> None:
        data = str(tmp / "medplum.sqlite")
        store = Store(data)
        seeding.seed(store, patients=10, per_patient=1)
        store.close()
        self.sandbox = start(
            "--client", f"{ADMIN[0]}:{ADMIN[1]}:admin",
            "--client", f"{READER[0]}:{READER[1]}:reader", data=data,
        )  # fmt: skip
        self.admin = self.sandbox.client(ADMIN)
        self.tmp, self.action_dir = tmp, action_dir
        self.repo = tmp / "repo"
        shutil.copytree(EXAMPLES, self.repo / "tenants")
        self.git("init", "-q", "-b", "main")
        self.git("add", ".")
        self.git("commit", "-qm", "tenants")
        self.main_sha = self.git("rev-parse", "HEAD")
        self.plan_key = "plan-" + secrets.token_hex(16)
        self.runner: Runner | None = None

    def git(self, *args: str) -> str:
        done = subprocess.run([*GIT, *args], cwd=self.repo, capture_output=True, text=True,
                              check=True)  # fmt: skip
        return done.stdout.strip()

    def branch(self, name: str, change: Callable[[Path], None]) -> str:
        self.git("checkout", "-q", "-b", name)
        change(self.repo / "tenants")
        self.git("commit", "-qam", f"change on {name}")
        sha = self.git("rev-parse", "HEAD")
        self.git("checkout", "-q", "main")
        return sha

    def cli(self, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
        monkeypatch.setenv("MEDPLUM_BASE_URL", self.sandbox.url)
        monkeypatch.setenv("MEDPLUM_CLIENT_ID", ADMIN[0])
        monkeypatch.setenv("MEDPLUM_CLIENT_SECRET", ADMIN[1])
        return main([*args, "-q"])

    def run(self, event: Event) -> dict[str, JobRun]:
        protected = {"MEDPLUM_CLIENT_ID": ADMIN[0], "MEDPLUM_CLIENT_SECRET": ADMIN[1],
                     "RECONCILER_PLAN_KEY": self.plan_key}  # fmt: skip
        work = self.tmp / f"run-{event.name}"
        self.runner = Runner(
            WORKFLOW, self.repo, self.action_dir, work,
            secrets={
                "MEDPLUM_BASE_URL": self.sandbox.url,
                "MEDPLUM_READ_CLIENT_ID": READER[0],
                "MEDPLUM_READ_CLIENT_SECRET": READER[1],
                "RECONCILER_REDACT_KEY": "redact-" + "k" * 32,
            },
            environments={
                "medplum-plan": Environment(protected),
                "medplum-production": Environment(protected, reviewers=True),
            },
        )  # fmt: skip
        jobs = self.runner.run(event)
        dump = os.environ.get("RECONCILER_WORKFLOW_DUMP")  # to read what a run printed
        if dump:
            for job in jobs.values():
                Path(dump).mkdir(parents=True, exist_ok=True)
                Path(dump, f"{event.name}-{job.name}.log").write_text(job.log)
                Path(dump, f"{event.name}-{job.name}.summary.md").write_text(job.summary)
        return jobs

    def seeded(self) -> list[str]:
        """Every value that identifies a seeded patient: ids, MRNs, given and family names."""
        values: set[str] = set()
        for patient in self.admin.search_all("Patient", {}):
            values.add(patient["id"])
            values |= {i["value"] for i in patient.get("identifier") or []}
            for name in patient.get("name") or []:
                values |= {name.get("family", ""), *name.get("given", [])}
        return sorted(v for v in values if v)

    def audits(self) -> list[dict[str, Any]]:
        return list(self.admin.search_all("AuditEvent", {}))


@pytest.fixture
def world(
    tmp_path: Path, make_sandbox: Callable[..., InProcessSandbox], action_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:  # fmt: skip
    monkeypatch.setenv("RECONCILER_PLAN_KEY", "local-" + "x" * 32)
    yield World(tmp_path, make_sandbox, action_dir)


def leaked(world: World, *texts: str) -> list[str]:
    text = "\n".join(texts)
    return [v for v in world.seeded() if re.search(rf"(?<![\w-]){re.escape(v)}(?![\w-])", text)]


def everything_written(jobs: dict[str, JobRun]) -> list[str]:
    return [text for job in jobs.values() for text in (job.log, job.summary)]


def results(jobs: dict[str, JobRun]) -> dict[str, str]:
    return {name: job.result for name, job in jobs.items()}


def add_a_patient_and_a_member(tenants: Path) -> None:
    north = tenants / "northside.yaml"
    north.write_text(north.read_text().replace(
        '    - identifier: "http://hospital.example/mrn|A-1003"  # Chloe Nguyen\n',
        '    - identifier: "http://hospital.example/mrn|A-1003"  # Chloe Nguyen\n'
        '    - identifier: "http://hospital.example/mrn|A-1004"  # Dev Patel\n',
    ))  # fmt: skip
    south = tenants / "southside.yaml"
    south.write_text(
        south.read_text() + "        - ProjectMembership/0f1e0006-0000-4000-8000-000000000005\n"
    )


def test_pull_request_plans_without_write_power_and_names_nobody(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.cli(monkeypatch, "apply", str(world.repo / "tenants"), "--auto-approve") == 0
    audits = len(world.audits())
    sha = world.branch("feature", add_a_patient_and_a_member)
    jobs = world.run(Event(
        "pull_request", sha, "refs/pull/7/merge", "feature", base_ref="main", head_ref="feature",
        payload={"pull_request": {"head": {"repo": {"full_name": "clinic/tenancy"}}}},
    ))  # fmt: skip
    assert results(jobs) == {"pr": "success", "plan": "skipped", "apply": "skipped",
                             "drift": "skipped"}, jobs["pr"].log  # fmt: skip
    pr = jobs["pr"]
    assert [s.outcome for s in pr.steps] == ["success"] * len(pr.steps), pr.log
    assert pr.step("Patients and resources").outputs == {"exit-code": "2", "changes": "true"}
    assert "tenants declare access" in pr.summary  # said: access was not planned here
    assert "**Plan: 1 patient to update, 1 account to add, 0 accounts to remove.**" in pr.summary
    assert ("2 changed; patient selectors +1 -0, resource selectors +0 -0, grants +0 -0, "
            "members +1 -0.") in pr.summary  # fmt: skip
    assert "+   member ProjectMembership/redacted-" in pr.summary
    # No credential in this job could write: no admin secret, no plan-signing key.
    for step in pr.steps:
        for value in (ADMIN[0], ADMIN[1], world.plan_key):
            assert all(value not in v for v in step.env.values()), step.name
    assert leaked(world, *everything_written(jobs)) == []
    assert len(world.audits()) == audits  # nothing was written


def test_push_applies_exactly_the_reviewed_artifact(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = world.run(Event("push", world.main_sha, "refs/heads/main", "main"))
    assert results(jobs) == {"pr": "skipped", "plan": "success", "apply": "success",
                             "drift": "skipped"}, jobs["plan"].log + jobs["apply"].log  # fmt: skip
    assert jobs["plan"].outputs == {"changes": "true"}
    assert (jobs["plan"].environment, jobs["apply"].environment) == (
        "medplum-plan", "medplum-production",
    )  # fmt: skip
    assert jobs["apply"].reviewed  # the environment with required reviewers
    assert world.runner is not None
    artifact = world.runner.artifacts[f"tenancy-plan-{world.main_sha}"]
    uploaded = artifact.files["plan.json"]
    assert artifact.downloads == [{"plan.json": hashlib.sha256(uploaded).hexdigest()}]
    applied = (world.tmp / "run-push" / "apply" / "workspace" / "plan.json").read_bytes()
    assert applied == uploaded  # byte for byte, through the apply
    (audit,) = world.audits()
    details = {d["type"]: d["valueString"] for d in audit["entity"][0]["detail"]}
    assert details["plan_digest"] == json.loads(uploaded)["plan_digest"]
    assert details["git_commit"] == world.main_sha
    assert details["ci_run_url"] == "https://github.com/clinic/tenancy/actions/runs/4242"
    # The plan's log got its counts only; the reviewers' summary the whole plan, redacted.
    plan_log = jobs["plan"].step("Plan from main").log
    assert "Plan: 6 patients to update, 7 accounts to add, 2 accounts to remove." in plan_log
    assert "Patient/" not in plan_log
    assert "| `Patient/redacted-" in jobs["plan"].summary
    events = world.runner.artifacts[f"tenancy-apply-events-{world.main_sha}"].files
    lines = [json.loads(x) for x in events["apply-events.jsonl"].decode().splitlines()]
    assert (lines[-1]["event"], lines[-1]["failed"]) == ("apply_summary", 0), lines[-1]
    assert "### Medplum tenancy: recent applies" in jobs["apply"].summary
    assert leaked(world, *everything_written(jobs), events["apply-events.jsonl"].decode()) == []
    assert world.cli(monkeypatch, "plan", str(world.repo / "tenants"), "--detailed-exitcode") == 0


def test_schedule_finds_drift_after_both_checks_ran(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.cli(monkeypatch, "apply", str(world.repo / "tenants"), "--auto-approve") == 0
    # Out-of-band changes: a patient loses its tenant, a member loses its grant.
    patient = world.admin.read_resource("Patient", seeding.named_patient_id(3))
    world.admin.set_accounts(f"Patient/{patient['id']}", [], propagate=True)
    membership = world.admin.read_resource(
        "ProjectMembership", "0f1e0006-0000-4000-8000-000000000003"
    )
    membership.pop("access", None)
    world.admin.update_resource(membership)
    jobs = world.run(Event("schedule", world.main_sha, "refs/heads/main", "main"))
    assert results(jobs) == {"pr": "skipped", "plan": "skipped", "apply": "skipped",
                             "drift": "failure"}  # fmt: skip
    drift = jobs["drift"]
    assert drift.step("Plan (changes").outputs == {"exit-code": "2", "changes": "true"}
    assert drift.step("Verify compartments").outcome == "success"
    assert drift.step("Verify compartments").outputs == {"exit-code": "2", "changes": "true"}
    assert drift.step("Fail on drift").outcome == "failure"
    assert "drifted from the manifests on main (plan: 2, verify: 2)" in drift.log
    assert "### Medplum tenancy: verify" in drift.summary
    assert drift.step("Access review").outcome == "success"
    assert world.runner is not None
    (review,) = world.runner.artifacts[f"access-review-{4242}"].files.values()
    assert b"Access review: who can see which tenant's records" in review
    assert b"ProjectMembership/redacted-" in review  # kept for 90 days: redacted
    assert leaked(world, review.decode()) == []
    assert leaked(world, *everything_written(jobs)) == []
