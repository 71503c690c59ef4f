"""A small GitHub Actions runner, faithful where the shipped workflow depends on it, so the test
suite can execute `examples/ci/github-actions.yml` for an event and look at what each job did.

Emulated: job selection (`if:`, `needs`, the status functions), the env layering (workflow,
job, GITHUB_ENV, step), `run:` steps through bash with GitHub's default variables and files
(GITHUB_OUTPUT, GITHUB_ENV, GITHUB_PATH, GITHUB_STEP_SUMMARY), secrets (repository secrets,
plus an environment's own only for jobs in that environment and only on its deployment
branches), and these actions:
- actions/checkout: a clone of the test repository at the event's commit (fetch-depth, default 1);
- actions/setup-python: a fresh virtual environment per job, seeing the test environment's
  installed dependencies (there is no package index here) but not this repository's package;
- actions/upload-artifact, actions/download-artifact: files kept between jobs, byte for byte;
- our own action (any `*/medplum-tenancy-reconciler@<ref>`): action.yml's composite steps run
  from a copy of the working tree — installation from the working tree instead of the pin.
Required reviewers approve at once (the test asserts which jobs needed them)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.workflow.expressions import Evaluator, render

OUR_ACTION = "/medplum-tenancy-reconciler@"
STEP_TIMEOUT_S = 300


@dataclass(frozen=True)
class Event:
    name: str  # pull_request, push, schedule
    sha: str
    ref: str  # refs/heads/main, refs/pull/7/merge
    branch: str  # what actions/checkout clones
    base_ref: str = ""
    head_ref: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Environment:
    secrets: dict[str, str]
    branches: tuple[str, ...] = ("main",)  # deployment branches
    reviewers: bool = False


@dataclass
class StepRun:
    name: str
    outcome: str  # success, failure, skipped
    log: str = ""
    env: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None


@dataclass
class JobRun:
    name: str
    result: str  # success, failure, skipped
    steps: list[StepRun] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    environment: str | None = None
    reviewed: bool = False

    @property
    def log(self) -> str:
        return "".join(s.log for s in self.steps)

    def step(self, name: str) -> StepRun:
        return next(s for s in self.steps if name in s.name)


@dataclass
class Artifact:
    files: dict[str, bytes]
    downloads: list[dict[str, str]] = field(default_factory=list)  # name -> sha256, per download


def _parse_kv_file(path: Path) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV: `name=value` lines and `name<<DELIM` … `DELIM` blocks."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i] != delim:
                body.append(lines[i])
                i += 1
            out[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


def _step_name(step: dict[str, Any], evaluator: Evaluator) -> str:
    if "name" in step:
        return evaluator.substitute(str(step["name"]))
    if "uses" in step:
        return f"Run {step['uses']}"
    return "Run " + str(step.get("run", "")).strip().splitlines()[0]


class Runner:
    def __init__(
        self,
        workflow: Path,
        repo: Path,
        action_dir: Path,
        work: Path,
        *,
        secrets: dict[str, str],
        environments: dict[str, Environment],
    ) -> None:
        self.workflow = yaml.safe_load(workflow.read_text())
        self.repo = repo
        self.action_dir = action_dir
        self.action = yaml.safe_load((action_dir / "action.yml").read_text())
        self.work = work
        self.secrets = secrets
        self.environments = environments
        self.artifacts: dict[str, Artifact] = {}
        self.jobs: dict[str, JobRun] = {}

    # --- jobs ------------------------------------------------------------------------------

    def run(self, event: Event) -> dict[str, JobRun]:
        triggers = self.workflow.get(True, self.workflow.get("on"))
        if event.name not in triggers:
            return {}
        pending = dict(self.workflow["jobs"])
        while pending:
            for name, job in list(pending.items()):
                needs = job.get("needs") or []
                needs = [needs] if isinstance(needs, str) else list(needs)
                if all(n in self.jobs for n in needs):
                    self.jobs[name] = self._job(name, job, needs, event)
                    del pending[name]
        return self.jobs

    def _github(self, event: Event, workspace: Path) -> dict[str, Any]:
        return {
            "event_name": event.name,
            "sha": event.sha,
            "ref": event.ref,
            "ref_name": event.ref.rsplit("/", 1)[-1],
            "base_ref": event.base_ref,
            "head_ref": event.head_ref,
            "repository": "clinic/tenancy",
            "repository_owner": "clinic",
            "server_url": "https://github.com",
            "run_id": "4242",
            "workspace": str(workspace),
            "event": event.payload,
        }

    def _job(self, name: str, job: dict[str, Any], needs: list[str], event: Event) -> JobRun:
        needs_ctx = {
            n: {"result": self.jobs[n].result, "outputs": self.jobs[n].outputs} for n in needs
        }
        ok = all(self.jobs[n].result == "success" for n in needs)
        root = self.work / name
        workspace, temp, home = root / "workspace", root / "temp", root / "home"
        for path in (workspace, temp, home):
            path.mkdir(parents=True)
        github = self._github(event, workspace)
        environment = job.get("environment")
        env_name = environment if isinstance(environment, str) else (environment or {}).get("name")
        secrets = dict(self.secrets)
        base = {"github": github, "needs": needs_ctx, "secrets": secrets, "env": {}}
        status = {"success": ok, "failure": not ok, "always": True, "cancelled": False}
        if not Evaluator(base, lambda s: status[s]).condition(job.get("if")):
            return JobRun(name, "skipped", environment=env_name)
        run = JobRun(name, "success", environment=env_name)
        if env_name:
            protected = self.environments[env_name]
            if event.ref.removeprefix("refs/heads/") not in protected.branches:
                run.result = "failure"
                run.steps.append(StepRun(
                    "environment", "failure",
                    f'Branch "{event.ref}" is not allowed to deploy to {env_name} due to '
                    "environment protection rules.\n",
                ))  # fmt: skip
                return run
            secrets.update(protected.secrets)
            run.reviewed = protected.reviewers
        state = _JobState(self, run, github, needs_ctx, secrets, workspace, temp, home, event)
        state.env.update(state.render_env(self.workflow.get("env") or {}))
        state.env.update(state.render_env(job.get("env") or {}))
        for step in job.get("steps") or []:
            state.step(step)
        run.result = "failure" if state.failed else "success"
        run.outputs = {
            k: state.evaluator().substitute(str(v)) for k, v in (job.get("outputs") or {}).items()
        }
        return run


class _JobState:
    """One job's variables while its steps run."""

    def __init__(
        self, runner: Runner, run: JobRun, github: dict[str, Any], needs: dict[str, Any],
        secrets: dict[str, str], workspace: Path, temp: Path, home: Path, event: Event,
    ) -> None:  # fmt: skip
        self.runner, self.run, self.github, self.needs = runner, run, github, needs
        self.secrets, self.workspace, self.temp, self.home = secrets, workspace, temp, home
        self.event = event
        self.env: dict[str, str] = {}  # workflow + job env
        self.exported: dict[str, str] = {}  # GITHUB_ENV
        self.path: list[str] = []  # GITHUB_PATH, newest first
        self.steps: dict[str, dict[str, Any]] = {}
        self.failed = False
        self.counter = 0

    def evaluator(
        self, extra: dict[str, Any] | None = None, steps: dict[str, Any] | None = None
    ) -> Evaluator:
        contexts = {
            "github": self.github, "needs": self.needs, "secrets": self.secrets,
            "env": {**self.env, **self.exported}, "steps": self.steps if steps is None else steps,
            "runner": {"temp": str(self.temp), "os": "Linux"}, **(extra or {}),
        }  # fmt: skip
        status = {
            "success": not self.failed, "failure": self.failed, "always": True,
            "cancelled": False,
        }  # fmt: skip
        return Evaluator(contexts, lambda s: status[s])

    def render_env(self, env: dict[str, Any], evaluator: Evaluator | None = None) -> dict[str, str]:
        ev = evaluator or self.evaluator()
        return {k: ev.substitute(render(v)) for k, v in env.items()}

    def base_env(self) -> dict[str, str]:
        system_path = [
            p
            for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and not Path(p).resolve().is_relative_to(Path(sys.prefix).resolve())
        ]  # fmt: skip — never the test environment's own scripts (reconciler among them)
        self.counter += 1
        return {
            "PATH": os.pathsep.join([*self.path, *system_path]),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKFLOW": str(self.runner.workflow.get("name", "")),
            "GITHUB_JOB": self.run.name,
            "GITHUB_RUN_ID": self.github["run_id"],
            "GITHUB_SHA": self.event.sha,
            "GITHUB_REF": self.event.ref,
            "GITHUB_REF_NAME": self.github["ref_name"],
            "GITHUB_EVENT_NAME": self.event.name,
            "GITHUB_BASE_REF": self.event.base_ref,
            "GITHUB_HEAD_REF": self.event.head_ref,
            "GITHUB_REPOSITORY": self.github["repository"],
            "GITHUB_SERVER_URL": self.github["server_url"],
            "GITHUB_WORKSPACE": str(self.workspace),
            "RUNNER_TEMP": str(self.temp),
            "RUNNER_OS": "Linux",
            "GITHUB_OUTPUT": str(self.temp / f"output-{self.counter}"),
            "GITHUB_ENV": str(self.temp / f"env-{self.counter}"),
            "GITHUB_PATH": str(self.temp / f"path-{self.counter}"),
            "GITHUB_STEP_SUMMARY": str(self.temp / f"summary-{self.counter}"),
        }

    def step(self, step: dict[str, Any], *, inputs: dict[str, str] | None = None,
             action_path: str | None = None, scope: dict[str, Any] | None = None) -> StepRun:  # fmt: skip
        steps_ctx = self.steps if scope is None else scope
        extra = {"inputs": inputs} if inputs is not None else {}
        if action_path:
            extra["github"] = {**self.github, "action_path": action_path}
        ev = self.evaluator(extra, steps_ctx)
        name = _step_name(step, ev)
        if not ev.condition(step.get("if")):
            result = StepRun(name, "skipped")
            self._record(step, result, steps_ctx, scope is None)
            return result
        env = self.base_env()
        env.update(self.env)
        env.update(self.exported)
        env.update(self.render_env(step.get("env") or {}, ev))
        if action_path:
            env["GITHUB_ACTION_PATH"] = action_path
        uses = step.get("uses")
        if uses:
            with_ = {k: ev.substitute(render(v)) for k, v in (step.get("with") or {}).items()}
            result = self._uses(str(uses), with_, env, name)
        else:
            result = self._bash(name, ev.substitute(str(step["run"])), env, step.get("shell"))
        self._collect(env, result)
        self._record(step, result, steps_ctx, scope is None)
        return result

    def _record(
        self, step: dict[str, Any], result: StepRun, ctx: dict[str, Any], top: bool
    ) -> None:
        if top:
            self.run.steps.append(result)
        if result.outcome == "failure":
            self.failed = True
        if step.get("id"):
            ctx[step["id"]] = {"outputs": result.outputs, "outcome": result.outcome,
                               "conclusion": result.outcome}  # fmt: skip

    def _collect(self, env: dict[str, str], result: StepRun) -> None:
        result.outputs.update(_parse_kv_file(Path(env["GITHUB_OUTPUT"])))
        self.exported.update(_parse_kv_file(Path(env["GITHUB_ENV"])))
        path_file = Path(env["GITHUB_PATH"])
        if path_file.exists():
            self.path = [*reversed(path_file.read_text().split()), *self.path]
        summary = Path(env["GITHUB_STEP_SUMMARY"])
        if summary.exists():
            self.run.summary += summary.read_text()

    def _bash(self, name: str, script: str, env: dict[str, str], shell: str | None) -> StepRun:
        self.counter += 1
        file = self.temp / f"step-{self.counter}.sh"
        file.write_text(script)
        command = (["bash", "--noprofile", "--norc", "-eo", "pipefail", str(file)]
                   if shell == "bash" else ["bash", "-e", str(file)])  # fmt: skip
        done = subprocess.run(
            command, cwd=self.workspace, env=env, capture_output=True, text=True,
            timeout=STEP_TIMEOUT_S, check=False,
        )  # fmt: skip
        outcome = "success" if done.returncode == 0 else "failure"
        return StepRun(
            name, outcome, done.stdout + done.stderr, dict(env), exit_code=done.returncode
        )

    # --- actions ---------------------------------------------------------------------------

    def _uses(self, uses: str, with_: dict[str, str], env: dict[str, str], name: str) -> StepRun:
        action = uses.split("@", 1)[0]
        if action == "actions/checkout":
            depth = int(with_.get("fetch-depth", "1") or 1)
            clone = ["git", "clone", "--quiet", "--no-tags", "--branch", self.event.branch]
            clone += [] if depth == 0 else ["--depth", str(depth)]
            done = subprocess.run(
                [*clone, f"file://{self.runner.repo}", str(self.workspace)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode == 0:
                head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=self.workspace,
                                      capture_output=True, text=True, check=True)  # fmt: skip
                assert head.stdout.strip() == self.event.sha, "the event's commit is checked out"
            return StepRun(name, "success" if done.returncode == 0 else "failure",
                           done.stdout + done.stderr, dict(env))  # fmt: skip
        if action == "actions/setup-python":
            return self._setup_python(name, env)
        if action == "actions/upload-artifact":
            return self._upload(name, with_, env)
        if action == "actions/download-artifact":
            return self._download(name, with_, env)
        if OUR_ACTION in uses:
            return self._composite(name, with_, env)
        raise AssertionError(f"the runner does not emulate {uses}")

    def _setup_python(self, name: str, env: dict[str, str]) -> StepRun:
        venv = self.temp / "python"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = subprocess.run(
            [str(venv / "bin" / "python"), "-c",
             "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        # The runner image's packages: the test environment's dependencies (pip included),
        # but not this repository (its editable finder is not loaded through a .pth path).
        Path(site, "_runner_image.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        self.path.insert(0, str(venv / "bin"))
        # No package index here: pip builds the action offline with the image's setuptools.
        self.exported.update(PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0")
        return StepRun(name, "success", f"Python at {venv}\n", dict(env))

    def _upload(self, name: str, with_: dict[str, str], env: dict[str, str]) -> StepRun:
        paths = [self.workspace / p for p in with_["path"].split()]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            return StepRun(name, "failure", f"No files were found: {missing}\n", dict(env))
        files = {p.name: p.read_bytes() for p in paths}
        self.runner.artifacts[with_["name"]] = Artifact(files)
        return StepRun(name, "success", f"Uploaded {sorted(files)}\n", dict(env))

    def _download(self, name: str, with_: dict[str, str], env: dict[str, str]) -> StepRun:
        artifact = self.runner.artifacts.get(with_["name"])
        if artifact is None:
            return StepRun(name, "failure", f"Artifact not found: {with_['name']}\n", dict(env))
        target = self.workspace / with_.get("path", "")
        target.mkdir(parents=True, exist_ok=True)
        for file, data in artifact.files.items():
            (target / file).write_bytes(data)
        artifact.downloads.append(
            {f: hashlib.sha256(d).hexdigest() for f, d in artifact.files.items()}
        )
        return StepRun(name, "success", f"Downloaded {sorted(artifact.files)}\n", dict(env))

    def _composite(self, name: str, with_: dict[str, str], env: dict[str, str]) -> StepRun:
        spec = self.runner.action
        unknown = set(with_) - set(spec["inputs"])
        assert not unknown, f"{name}: inputs the action does not declare: {unknown}"
        inputs = {k: with_.get(k, render(v.get("default", ""))) for k, v in spec["inputs"].items()}
        missing = [k for k, v in spec["inputs"].items() if v.get("required") and not inputs[k]]
        assert not missing, f"{name}: required inputs missing: {missing}"
        scope: dict[str, Any] = {}
        result = StepRun(name, "success", env=dict(env))
        for inner in spec["runs"]["steps"]:
            if result.outcome == "failure":
                break
            done = self.step(inner, inputs=inputs, action_path=str(self.runner.action_dir),
                             scope=scope)  # fmt: skip
            result.log += done.log
            result.exit_code = done.exit_code
            if done.outcome == "failure":
                result.outcome = "failure"
        ev = self.evaluator({"inputs": inputs}, scope)
        result.outputs = {
            k: ev.substitute(str(v["value"])) for k, v in (spec.get("outputs") or {}).items()
        }
        return result


def copy_working_tree(repo: Path, target: Path) -> Path:
    """The action's checkout: the working tree's files (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=repo, capture_output=True,
        check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = repo / name
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():  # as git checks it out: a link (reconciler/schemas is one)
            (target / name).symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target / name)
    return target
