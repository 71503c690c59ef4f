"""Trust in CI (design section 10): never a silent sandbox, the target named, a preflight that
refuses a non-admin apply before anything is read or written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main
from tests.integration.helpers import create_org, create_patients, tenant_yaml, write
from tests.sandbox_process import MEMBER, InProcessSandbox

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tenants"


def run(monkeypatch: pytest.MonkeyPatch, capsys: Any, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*args, "--log-format", "json"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("MEDPLUM_BASE_URL", "MEDPLUM_CLIENT_ID", "MEDPLUM_CLIENT_SECRET", "CI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_credentials_without_a_url_never_fall_back_to_the_sandbox(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # A fork PR or an environment-scoped secret: the id and secret are there, the URL is not.
    monkeypatch.setenv("MEDPLUM_CLIENT_ID", "ci-client")
    monkeypatch.setenv("MEDPLUM_CLIENT_SECRET", "ci-secret")
    monkeypatch.setenv("MEDPLUM_BASE_URL", "")
    for command in (["plan"], ["apply", "--auto-approve"], ["verify"]):
        code, out, err = run(monkeypatch, capsys, *command, str(EXAMPLES))
        assert (code, out) == (1, ""), command
        assert err.splitlines()[-1] == (
            "Error: MEDPLUM_CLIENT_ID/MEDPLUM_CLIENT_SECRET are set but no server is: set "
            "MEDPLUM_BASE_URL (or --server URL); --sandbox uses the local sandbox on purpose"
        )
    assert list(clean_env.iterdir()) == []  # a refused run creates nothing on disk


def test_under_ci_a_missing_url_is_an_error_and_sandbox_must_be_asked_for(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("CI", "true")
    code, out, err = run(monkeypatch, capsys, "plan", str(EXAMPLES), "-q")
    assert (code, out) == (1, "")
    assert "no server configured and CI=true: set MEDPLUM_BASE_URL" in err
    assert list(clean_env.iterdir()) == []
    assert run(monkeypatch, capsys, "sandbox", "seed", "--patients", "3")[0] == 0
    code, out, err = run(monkeypatch, capsys, "plan", str(EXAMPLES), "--sandbox", "-q")
    assert code == 0, err
    assert out.splitlines()[0] == "Target: embedded sandbox (.reconciler/sandbox.sqlite)"
    monkeypatch.setenv("MEDPLUM_BASE_URL", "https://medplum.example")
    code, _, err = run(monkeypatch, capsys, "plan", str(EXAMPLES), "--sandbox")
    assert (
        code == 1 and "--sandbox asks for the embedded sandbox, but a server is configured" in err
    )


def test_target_in_plan_markdown_and_apply_result(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Any
) -> None:
    client = sandbox.client()
    org = create_org(client)
    refs = create_patients(client, 2)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", org, refs))
    target = f"Target: {sandbox.url}/ (client sandbox-…)"
    code, out, _ = cli(sandbox, "plan", manifests)
    assert code == 0 and out.splitlines()[0] == target
    code, out, _ = cli(sandbox, "plan", manifests, "--format", "markdown")
    assert f"Target: `{sandbox.url}/ (client sandbox-…)`" in out.splitlines()
    code, out, _ = cli(sandbox, "apply", manifests, "--auto-approve")
    lines = out.splitlines()
    assert code == 0 and lines[0] == target
    assert (
        lines[
            lines.index("Apply complete! 2 patients updated, 2 accounts added, 0 accounts removed.")
            - 1
        ]
        == target
    )


def test_preflight_refuses_a_non_admin_apply_before_reading_or_writing(
    sandbox: InProcessSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    admin = sandbox.client()
    org = create_org(admin)
    refs = create_patients(admin, 3)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", org, refs))
    monkeypatch.setenv("MEDPLUM_BASE_URL", sandbox.url)
    monkeypatch.setenv("MEDPLUM_CLIENT_ID", MEMBER[0])
    monkeypatch.setenv("MEDPLUM_CLIENT_SECRET", MEMBER[1])
    before = sandbox.stats()["requests"]
    code, out, err = run(monkeypatch, capsys, "apply", manifests, "--auto-approve")
    assert (code, out) == (1, "")
    line = err.splitlines()[-1]
    assert line.startswith(f"Error: apply needs a project admin: the client '{MEMBER[0]}' (")
    assert line.endswith(
        "($set-accounts and membership writes are for project admins only); nothing was "
        "read or written"
    )
    assert MEMBER[1] not in err
    # Only the token and /auth/me went to the server (plus this stats call).
    assert sandbox.stats()["requests"] - before <= 3
    code, _, err = run(monkeypatch, capsys, "verify", manifests, "--repair")
    assert code == 1 and "verify --repair needs a project admin" in err
    code, out, err = run(monkeypatch, capsys, "plan", manifests, "-q")
    assert code == 0, err  # reading is fine for a member
    assert os.environ["MEDPLUM_CLIENT_ID"] == MEMBER[0]


def test_show_renders_the_saved_plan_without_any_server(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sandbox.client()
    org = create_org(client)
    refs = create_patients(client, 3)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", org, refs))
    plan_file = str(tmp_path / "plan.json")
    code, planned, _ = cli(sandbox, "plan", manifests, "--out", plan_file)
    assert code == 0
    # No server: an address where nothing listens, and no credentials.
    monkeypatch.setenv("MEDPLUM_BASE_URL", "http://127.0.0.1:9")
    code, shown, err = cli(sandbox, "show", plan_file)
    assert code == 0, err
    assert shown.splitlines()[0] == planned.splitlines()[0]  # the target it was made for
    plan_line = next(line for line in planned.splitlines() if line.startswith("Plan: "))
    assert plan_line in shown.splitlines()
    code, as_json, _ = cli(sandbox, "show", plan_file, "--format", "json")
    assert json.loads(as_json) == json.loads(Path(plan_file).read_text())
    code, md, _ = cli(sandbox, "show", plan_file, "--format", "markdown", "--redact")
    assert code == 0 and f"**{plan_line}**" in md
    assert all(r.split("/")[1] not in md for r in refs)
    Path(plan_file).write_text(Path(plan_file).read_text().replace(refs[0], refs[1]))
    code, _, err = cli(sandbox, "show", plan_file)
    assert code == 1 and "plan_digest does not match its content" in err


def test_redaction_is_keyed_and_needs_the_key_under_ci(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sandbox.client()
    org = create_org(client)
    refs = create_patients(client, 2)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", org, refs))

    def redacted(*extra: str) -> str:
        code, out, err = cli(sandbox, "plan", manifests, "--redact", "--no-estimate", *extra)
        assert code == 0, err
        return out

    random_a, random_b = redacted(), redacted()  # locally, without a key: a random key a run
    assert random_a != random_b
    monkeypatch.setenv("RECONCILER_REDACT_KEY", "key-one")
    one, again = redacted(), redacted()
    assert one == again  # stable for one key
    monkeypatch.setenv("RECONCILER_REDACT_KEY", "key-two")
    assert redacted() != one
    monkeypatch.delenv("RECONCILER_REDACT_KEY")
    monkeypatch.setenv("CI", "true")
    code, out, err = cli(sandbox, "plan", manifests, "--redact")
    assert (code, out) == (1, "")
    assert "--redact under CI=true needs RECONCILER_REDACT_KEY" in err


def test_the_apply_prompt_names_the_target(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    client = sandbox.client()
    org = create_org(client)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", org, create_patients(client, 1)))
    monkeypatch.setattr(sys, "stdin", Terminal("no\n"))
    code, _, err = cli(sandbox, "apply", manifests)
    assert code == 1
    assert (
        f"Do you want to apply these changes to {sandbox.url}/ (client sandbox-…)? "
        "Only 'yes' will be accepted: "
    ) in err
    assert "apply cancelled (answer was 'no', not 'yes'); nothing was changed" in err
