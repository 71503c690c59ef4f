"""A corpus of malformed inputs: each gets one clear line naming the file (and line), exit 1, no
traceback, and the server is not written to (every resource's versionId unchanged)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import create_org, create_patients, tenant_yaml
from tests.reliability.conftest import FIGURES

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "bad"
Run = Any


def corpus(tmp: Path, org: str, patient: str, sb_url: str) -> dict[str, tuple[Path, str]]:
    """name → (path given to the CLI, text the error line must contain)."""
    cases: dict[str, tuple[Path, str]] = {
        f.stem: (f, str(f.relative_to(ROOT)) if False else f.as_posix())
        for f in sorted(BAD.iterdir())
    }
    good = tenant_yaml("good", org, [patient])

    def put(name: str, content: str | bytes) -> Path:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    big = tmp / "huge.yaml"
    with big.open("wb") as fh:  # 50 MB
        fh.write(b"# padding\n" * (5 * 1024 * 1024))
    cases["50 MB file"] = (big, big.as_posix())
    (tmp / "empty-dir").mkdir()
    cases["directory with no manifests"] = (tmp / "empty-dir", (tmp / "empty-dir").as_posix())
    locked = tmp / "locked"
    locked.mkdir()
    (locked / "gone.yaml").symlink_to(tmp / "does-not-exist.yaml")
    if os.geteuid() != 0:
        unreadable = put("locked/unreadable.yaml", good)
        unreadable.chmod(0)
    cases["unreadable file"] = (locked, (locked / "gone.yaml").as_posix())
    deep = put("deep.yaml", "a: " + "[" * 500 + "]" * 500 + "\n")
    cases["deep nesting"] = (deep, deep.as_posix())
    dup = tmp / "dup-tenants"
    put("dup-tenants/a.yaml", good)
    put("dup-tenants/b.yaml", tenant_yaml("good", "Organization/other", [patient]))
    cases["duplicate tenant across files"] = (dup, (dup / "b.yaml").as_posix())
    dupacc = tmp / "dup-accounts"
    put("dup-accounts/a.yaml", good)
    put("dup-accounts/b.yaml", tenant_yaml("other", org, [patient]))
    cases["duplicate account across files"] = (dupacc, (dupacc / "b.yaml").as_posix())
    missing = tmp / "no-such-file.yaml"
    cases["missing file"] = (missing, missing.as_posix())
    # Saved plans: corrupt, hand-edited, from another server, from a future version.
    plan = {
        "format_version": "1", "server": "http://127.0.0.1:1/", "created_at": "2026-01-01T00:00:00Z",
        "manifests": {"digest": "sha256:" + "0" * 64, "files": []}, "changes": [],
        "summary": {"patients": 0, "add": 0, "remove": 0},
    }  # fmt: skip
    from reconciler.plan.jsonform import digest_of

    truncated = put("plans/truncated.json", '{"format_version": "1", "changes": [')
    cases["truncated plan"] = (truncated, truncated.as_posix())
    edited = dict(plan, plan_digest=digest_of(plan))
    edited["summary"] = {"patients": 5, "add": 0, "remove": 0}
    edited_path = put("plans/edited.json", json.dumps(edited))
    cases["hand-edited plan"] = (edited_path, edited_path.as_posix())
    foreign = dict(plan)
    foreign["plan_digest"] = digest_of(foreign)
    foreign_path = put("plans/other-server.json", json.dumps(foreign))
    cases["plan from another server"] = (foreign_path, foreign_path.as_posix())
    future = dict(plan, format_version="2")
    future["plan_digest"] = digest_of(future)
    future_path = put("plans/future.json", json.dumps(future))
    cases["plan from a future version"] = (future_path, future_path.as_posix())
    wrong_shape = put(
        "plans/wrong-shape.json", json.dumps({"format_version": "1", "changes": "nope"})
    )
    cases["plan with the wrong shape"] = (wrong_shape, wrong_shape.as_posix())
    return cases


def test_malformed_inputs_one_line_exit_1_no_writes(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory()
    client = sb.client()
    org = create_org(client)
    (patient,) = create_patients(client, 1, compartment=1)
    cases = corpus(tmp_path, org, patient, sb.url)
    assert len(cases) >= 40
    before = sb.snapshot()
    for name, (path, names) in cases.items():
        for command in (["plan"], ["apply", "--auto-approve"], ["validate"]):
            if command[0] == "validate" and path.suffix == ".json":
                continue
            code, out, err = run(sb, *command, str(path))
            errors = [
                line
                for line in err.splitlines()
                if line.startswith(("Error:", "/")) or ": error: " in line
            ]
            assert code == 1, (name, command, out, err)
            assert "Traceback" not in err and "unexpected" not in err, (name, err)
            assert out == "", (name, command, out)
            assert errors and names in "\n".join(errors), (name, command, err)
            first = next(line for line in errors if names in line)
            if ": error: " in first and path.is_file() and path.suffix != ".json":
                parts = first.split(": error: ", 1)[0].rsplit(":", 2)
                assert len(parts) == 3 and parts[1].isdigit(), first  # file:line:column
        FIGURES["malformed inputs tried"] += 1
    assert sb.snapshot() == before
    FIGURES["writes observed on bad input"] += sum(1 for k in sb.snapshot() if k not in before)


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_unresolvable_selectors_write_nothing(
    sandbox_factory: Any, run: Run, tmp_path: Path, command: str
) -> None:
    sb = sandbox_factory()
    client = sb.client()
    org = create_org(client)
    (patient,) = create_patients(client, 1)
    path = tmp_path / "t.yaml"
    path.write_text(
        tenant_yaml("x", org, [patient, "Patient/00000000-0000-4000-8000-000000000bad"])
    )
    before = sb.snapshot()
    code, out, err = (
        run(sb, command, str(path), "--auto-approve")
        if command == "apply"
        else run(sb, command, str(path))
    )
    assert code == 1 and out == ""
    assert (
        f"{path.as_posix()}:11:7: error: Patient/00000000-0000-4000-8000-000000000bad does not exist"
        in err
    )
    assert sb.snapshot() == before
