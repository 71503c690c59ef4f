"""The commands CI is built from (issue 27): a pull request's plan without write power
(`--skip-access`, the non-admin error), `diff --base` from git, `plan --out` that logs counts
only, `--redact` on every line, the lock taken before the prompt, `lock status`, `history`."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.apply.lock import ApplyLock, current_lock
from reconciler.clock import iso_utc
from reconciler.sandbox import seed as seeding
from tests.integration.helpers import (
    create_org,
    create_patients,
    demo_data,
    run_cli,
    tenant_yaml,
    write,
)
from tests.sandbox_process import READER, InProcessSandbox

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tenants"
Cli = Any


def run_as(
    creds: tuple[str, str],
    sb: InProcessSandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[int, str, str]:
    return run_cli(sb, monkeypatch, capsys, *args, creds=creds)


@pytest.fixture
def demo(make_sandbox: Any, tmp_path: Path) -> tuple[InProcessSandbox, Path]:
    data, manifests = demo_data(tmp_path, patients=12, per_patient=1)
    return make_sandbox(data=data), manifests


def test_a_read_only_client_plans_patients_but_not_access(
    demo: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sb, manifests = demo
    code, out, err = run_as(READER, sb, monkeypatch, capsys, "plan", str(manifests))
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        "Error: planning access needs a project-admin client: only project admins may read "
        "ProjectMemberships (the client 'sandbox-reader' is not a project admin); in a pull "
        "request, review access offline with `reconciler diff --base REF`, or plan patients "
        "and resources alone with --skip-access"
    )
    code, out, err = run_as(
        READER, sb, monkeypatch, capsys, "plan", str(manifests), "--skip-access",
        "--detailed-exitcode", "--no-estimate",
    )  # fmt: skip
    assert code == 2, err
    assert out.splitlines()[2] == (
        "Warning: access not planned (--skip-access): 3 tenants declare access (northside, "
        "research-registry, southside); review it with `reconciler diff --base REF`, plan it with a "
        "project-admin client"
    )
    assert "Plan: 7 patients to update" in out and "Access:" not in out
    # The same patients as an admin's plan of everything.
    admin = run_as(
        ("sandbox-admin", "sandbox-secret"), sb, monkeypatch, capsys, "plan", str(manifests),
        "--no-estimate",
    )[1]  # fmt: skip
    assert "Access: 5 grants to add" in admin
    patients = [line for line in out.splitlines() if line.startswith("  update Patient/")]
    assert patients == [line for line in admin.splitlines() if line.startswith("  update Patient/")]
    # The reader can write nothing, not even through the tool's other doors.
    code, _, err = run_as(READER, sb, monkeypatch, capsys, "apply", str(manifests),
                          "--auto-approve")  # fmt: skip
    assert code == 1 and "apply needs a project admin" in err.splitlines()[-1]


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo / "tenants")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "base")
    return repo


def _diff(repo: Path, *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "diff", *args],
        cwd=repo, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_diff_against_a_git_base_shows_what_the_change_does(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert _diff(repo, "--base", "main", "--detailed-exitcode")[:2] == (
        0,
        "No differences: the manifests declare the same tenants, selectors and access. "
        f"(against main ({_git(repo, 'rev-parse', 'main')[:12]}))\n",
    )
    north = repo / "tenants" / "northside.yaml"
    text = north.read_text()
    text = text.replace("membership: authoritative", "membership: additive")
    text = text.replace(
        '    - identifier: "http://hospital.example/mrn|A-1003"  # Chloe Nguyen\n',
        '    - identifier: "http://hospital.example/mrn|A-1004"\n',
    )
    text = text.replace(
        '        - identifier: "https://example.org/staff|n-0002"           # Front Desk North\n',
        "        - profile: Practitioner/0f1e0002-0000-4000-8000-000000000021\n",
    )
    north.write_text(text)
    (repo / "tenants" / "research.yaml").unlink()
    (repo / "tenants" / "west.yaml").write_text(
        tenant_yaml("west", "Organization/w1", ["Patient/0f1e0003-0000-4000-8000-000000000004"])
    )
    code, out, err = _diff(repo, "--base", "main", "--detailed-exitcode")
    assert code == 2, err
    base = f"main ({_git(repo, 'rev-parse', 'main')[:12]})"
    assert out.splitlines() == [
        "tenant northside (changed, tenants/northside.yaml)",
        "  ~ membership authoritative -> additive (nothing is removed from patients any more)",
        "  + patient identifier http://hospital.example/mrn|A-1004",
        "  - patient identifier http://hospital.example/mrn|A-1003",
        "  ~ access AccessPolicy/0f1e0004-0000-4000-8000-000000000001 (%organization)",
        "  +   member profile Practitioner/0f1e0002-0000-4000-8000-000000000021",
        "  -   member identifier https://example.org/staff|n-0002",
        "",
        "tenant research-registry (removed, main:tenants/research.yaml)",
        "  - tenant removed: its account Organization/0f1e0001-0000-4000-8000-000000000003 is "
        "no longer managed (nothing is removed from the server; its patients and members keep "
        "it)",
        "",
        "tenant west (added, tenants/west.yaml)",
        "  + account Organization/w1, authoritative",
        "  + patient Patient/0f1e0003-0000-4000-8000-000000000004",
        "",
        f"Diff against {base}: 1 tenant added, 1 removed, 1 changed; patient selectors +2 -3, "
        "resource selectors +0 -0, grants +0 -1, members +1 -2.",
    ]
    # Redacted (what a pull request's summary gets): no identifier value, no patient or
    # member id; the tenants, accounts and policies stay readable.
    code, md, err = _diff(repo, "--base", "main", "--format", "markdown", "--redact")
    assert code == 0, err
    for secret in ("A-1004", "A-1003", "n-0002", "0f1e0002-0000-4000-8000-000000000021",
                   "0f1e0003-0000-4000-8000-000000000004"):  # fmt: skip
        assert secret not in md + err
    assert "```diff\n! membership authoritative -> additive" in md
    assert "+ patient identifier http://hospital.example/mrn|redacted-" in md
    assert "AccessPolicy/0f1e0004-0000-4000-8000-000000000001" in md
    # A base that does not load is named by its revision, never a temporary directory.
    north.write_text("kind: [\n")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qam", "bad")
    code, out, err = _diff(repo, "--base", "HEAD")
    assert (code, out) == (1, "")
    assert err.splitlines()[0].startswith("HEAD:tenants/northside.yaml:")
    assert "reconciler-diff-" not in err
    assert _diff(repo, "--base", "no-such-ref")[2].splitlines()[-1] == (
        "Error: --base no-such-ref: no such commit here (in a shallow CI checkout, fetch it "
        "first: git fetch --depth=1 origin no-such-ref)"
    )


def test_plan_out_under_ci_logs_counts_and_redacts_every_line(
    demo: Any, cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sb, manifests = demo
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("RECONCILER_REDACT_KEY", "k" * 32)
    monkeypatch.setenv("RECONCILER_PLAN_KEY", "p" * 32)
    # A selector that does not resolve: its error line, redacted, names no identifier.
    north = manifests / "northside.yaml"
    north.write_text(
        north.read_text()
        .replace("mrn|A-1003", "mrn|A-9999")
        .replace(
            "Patient/0f1e0003-0000-4000-8000-000000000002",
            "Patient/0f1e0003-0000-4000-8000-00000000beef",
        )
    )
    code, out, err = cli(sb, "plan", str(manifests), "--redact")
    assert (code, out) == (1, "")
    assert "A-9999" not in err and "00000000beef" not in err
    assert "identifier http://hospital.example/mrn|redacted-" in err
    north.write_text((EXAMPLES / "northside.yaml").read_text())
    plan_file = tmp_path / "plan.json"
    code, out, err = cli(sb, "plan", str(manifests), "--out", str(plan_file), "--redact")
    assert code == 0, err
    assert out.splitlines()[-3:-1] == [
        "Plan: 7 patients to update, 8 accounts to add, 2 accounts to remove.",
        "Access: 5 grants to add, 0 grants to revoke, on 5 memberships.",
    ]
    assert "Patient/" not in out + err
    outputs = [out, err]
    for command in (
        ["validate", str(manifests)],
        ["show", str(plan_file)],
        ["show", str(plan_file), "--format", "json"],
        ["apply", str(plan_file), "--format", "json"],
        ["verify", str(manifests), "--access"],
        ["verify", str(manifests), "--access", "--format", "markdown"],
        ["accounts", f"Patient/{seeding.named_patient_id(3)}"],
        ["accounts", "Patient/0f1e0003-0000-4000-8000-00000000beef"],  # an error line
        ["import", "--account", f"Organization/{seeding.ORG_NORTH}",
         "--identifier-system", seeding.MRN],
        ["history"],
        ["lock", "status"],
    ):  # fmt: skip
        code, out, err = cli(sb, *command, "--redact")
        assert code in (0, 1), (command, err)
        if command[0] == "import":  # a manifest is its identifiers: refused, not half-hidden
            assert (code, out) == (1, "") and "import prints a manifest" in err
        outputs += [out, err]
    text = "\n".join(outputs)
    assert "redacted-" in text
    for value in seeded_values(sb):
        found = re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", text)
        assert not found, text[max(0, found.start() - 300) : found.end() + 100]


def seeded_values(sb: InProcessSandbox) -> set[str]:
    values: set[str] = set()
    for patient in sb.client().search_all("Patient", {}):
        values |= {patient["id"], *(i["value"] for i in patient.get("identifier") or [])}
        for name in patient.get("name") or []:
            values |= {name.get("family", ""), *name.get("given", [])}
    return values - {""}


def test_apply_takes_the_lock_before_reading_and_holds_it_through_the_prompt(
    make_sandbox: Any, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = make_sandbox()
    client = sb.client()
    org = create_org(client)
    refs = create_patients(client, 2)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("prompted", org, refs))
    seen: list[Any] = []

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

        def readline(self, *_: Any) -> str:
            seen.append(current_lock(sb.client()))  # what another pipeline would see now
            return "yes\n"

    monkeypatch.setattr(sys, "stdin", Terminal())
    other = ApplyLock(sb.client(), plan_digest="sha256:other")
    other.acquire()
    code, out, err = cli(sb, "apply", manifests)
    other.release()
    assert (code, seen) == (1, [])  # refused before the plan and the prompt
    assert out == "" and "Do you want" not in err
    assert "Error: another apply holds the lock (since " in err
    code, out, err = cli(sb, "apply", manifests)
    assert code == 0, err
    (state,) = seen
    assert state is not None and state.live  # held while the person read the plan
    assert state.info.plan.startswith("sha256:")  # and it says for which plan
    assert current_lock(client) is None


def test_lock_status_and_history(
    make_sandbox: Any, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = make_sandbox()
    client = sb.client()
    assert cli(sb, "lock", "status")[1] == "No apply holds the lock.\n"
    assert json.loads(cli(sb, "lock", "status", "--format", "json")[1]) == {"held": False}
    held = ApplyLock(sb.client(), plan_digest="sha256:abc")
    held.acquire()
    assert held.info is not None
    code, out, _ = cli(sb, "lock", "status")
    ends = held.info.expires_at()
    assert code == 0 and ends is not None
    assert out.splitlines() == [
        f"The apply lock Basic/{held.info.id} is held by {held.holder}.",
        f"  since:    {held.info.since}",
        f"  renewed:  {held.info.renewed} (server time)",
        f"  expires:  {iso_utc(ends)} unless renewed",
        "  plan:     sha256:abc",
    ]
    status = json.loads(cli(sb, "lock", "status", "--format", "json")[1])
    assert {k: status[k] for k in ("held", "lock", "holder", "plan_digest", "expires")} == {
        "held": True,
        "lock": f"Basic/{held.info.id}",
        "holder": held.holder,
        "plan_digest": "sha256:abc",
        "expires": iso_utc(ends),
    }
    held.release()
    assert cli(sb, "history")[1] == (
        "No applies recorded (no AuditEvent written by the reconciler).\n"
    )
    org = create_org(client)
    refs = create_patients(client, 3)
    monkeypatch.setenv("GITHUB_SHA", "a" * 40)
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.example")
    monkeypatch.setenv("GITHUB_REPOSITORY", "clinic/tenancy")
    monkeypatch.setenv("GITHUB_RUN_ID", "77")
    first = write(tmp_path, "a.yaml", tenant_yaml("first", org, refs[:2]))
    assert cli(sb, "apply", first, "--auto-approve")[0] == 0
    monkeypatch.delenv("GITHUB_SHA")
    second = write(tmp_path, "a.yaml", tenant_yaml("first", org, refs))
    assert cli(sb, "apply", second, "--auto-approve")[0] == 0
    code, out, _ = cli(sb, "history", "--format", "json")
    runs = json.loads(out)["runs"]
    assert [(r["action"], r["succeeded"], r["outcome"]) for r in runs] == [
        ("apply", True, "apply complete"),
        ("apply", True, "apply complete"),
    ]
    assert [r["counts"]["accounts_added"] for r in runs] == [1, 2]  # newest first
    assert runs[1]["git_commit"] == "a" * 40 and runs[0]["git_commit"] == ""
    assert runs[0]["client"] == "ClientApplication/sandbox-admin"
    assert runs[0]["ci_run_url"] == "https://github.example/clinic/tenancy/actions/runs/77"
    code, out, _ = cli(sb, "history", "--limit", "1")
    lines = out.splitlines()
    assert lines[0].endswith("  apply  succeeded  by ClientApplication/sandbox-admin")
    assert lines[1] == "  apply complete: 1 patient updated, 1 account added"
    assert lines[2].startswith("  plan sha256:") and "  manifests sha256:" in lines[2]
    assert lines[-1] == "1 run shown, newest first (--limit for more)."
    code, md, _ = cli(sb, "history", "--format", "markdown", "--limit", "2")
    assert md.count("| apply | succeeded: apply complete |") == 2
    assert "[run](https://github.example/clinic/tenancy/actions/runs/77)" in md
    assert cli(sb, "history", "--limit", "0")[0] == 1
