"""`reconciler plan` end to end against a sandbox process: exact output and exit codes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import jsonschema
import pytest

from reconciler.cli import main
from reconciler.schemas import load_schema
from tests.integration.conftest import Cli
from tests.integration.helpers import create_org, create_patients, mrn, tenant_yaml, write
from tests.sandbox_process import InProcessSandbox


def test_plan_text_json_markdown_and_exit_codes(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Cli
) -> None:
    client = sandbox.client()
    north, south, legacy = create_org(client), create_org(client), create_org(client)
    p1, p2 = create_patients(client, 2, accounts=[south, legacy])
    (p3,) = create_patients(client, 1)
    m1, m3 = mrn(client, p1), mrn(client, p3)
    path = write(
        tmp_path,
        "t.yaml",
        tenant_yaml("north", north, [p1, f'{{identifier: "{m3}"}}'])
        + "---\n"
        + tenant_yaml("south", south, [p2]),
    )
    code, out, err = cli(sandbox, "plan", path)
    assert code == 0, err
    w = len(south)
    block1 = (
        f"  ~ {p1}  (identifier {m1})\n"
        f"      + {north.ljust(w)}   (tenant north)\n"
        f"      - {south.ljust(w)}   (tenant south, authoritative)\n"
        f"        {legacy.ljust(w)}   (unmanaged, kept)\n"
        f"      meta.account changes: {south} -> {legacy}\n\n"
    )
    block3 = f"  ~ {p3}  (identifier {m3})\n      + {north}   (tenant north)\n\n"
    blocks = block1 + block3 if p1 < p3 else block3 + block1  # changes are sorted by patient
    target = f"Target: {sandbox.url}/ (client sandbox-…)"
    assert (
        out
        == (
            f"{target}\n\n"
            "Reconciler will perform the following changes:\n\n"
            + blocks
            + "Per tenant:\n  north  +2 -0\n  south  +0 -1\n\n"
            + "Plan: 2 patients to update, 2 accounts to add, 1 account to remove.\n"
            # 2 x 120 (empty compartments, sent synchronously) and what apply reads and writes
            # around them: lock, journal, re-reads, history, verification, audit (plan/estimate.py)
            + "Estimated cost: 2 $set-accounts (2 synchronous, 0 async) and 0 compartment writes ≈ "
            "923 quota points ≈ 1 s at an assumed 50,000 points/min\n"
        )
    )
    assert out.count("  ~ Patient/") == 2
    assert (
        out.splitlines()[-2]
        == "Plan: 2 patients to update, 2 accounts to add, 1 account to remove."
    )
    assert [json.loads(line)["event"] for line in err.splitlines()] == [
        "live state read",
        "plan computed",
    ]

    code, out, err = cli(sandbox, "plan", path, "--detailed-exitcode", "--format", "json")
    assert code == 2
    data = json.loads(out)
    jsonschema.Draft202012Validator(load_schema("plan.schema.json")).validate(data)
    assert [c["patient"] for c in data["changes"]] == sorted([p1, p3])
    assert data["summary"] == {"patients": 2, "add": 2, "remove": 1}
    assert data["server"] == sandbox.url.replace("127.0.0.1", "127.0.0.1") + "/"
    assert data["target"] == target.removeprefix("Target: ")
    assert data["manifests"]["files"] == [path]

    code, out, _ = cli(sandbox, "plan", path, "--format", "markdown")
    assert code == 0 and out.startswith(
        f"### Medplum tenancy plan\n\n{target.replace('Target: ', 'Target: `')}`\n\n"
        "**Plan: 2 patients to update"
    )


def test_plan_out_file_is_0600_and_says_how_to_apply(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Cli
) -> None:
    client = sandbox.client()
    org = create_org(client)
    (p,) = create_patients(client, 1)
    path = write(tmp_path, "t.yaml", tenant_yaml("solo", org, [p]))
    out_file = tmp_path / "plan.json"
    code, out, err = cli(sandbox, "plan", path, "--out", str(out_file), "--format", "json")
    assert code == 0
    saved = json.loads(out_file.read_text())
    assert saved["changes"][0]["patient"] == p
    assert stat.S_IMODE(os.stat(out_file).st_mode) == 0o600
    assert f"Saved the plan to {out_file} (mode 0600: it names patients). See it with:" in err
    assert f"    reconciler show {out_file}\nTo apply exactly these changes, run:" in err
    # The log gets the counts and the digest, never a patient: the file holds the plan.
    assert json.loads(out) == {
        "format_version": saved["format_version"],
        "server": saved["server"],
        "target": saved["target"],
        "summary": {"patients": 1, "add": 1, "remove": 0},
        "plan_digest": saved["plan_digest"],
    }
    assert p.split("/")[1] not in out + err
    code, text, _ = cli(sandbox, "plan", path, "--out", str(out_file))
    assert code == 0
    assert text.splitlines()[0].startswith(f"Target: {sandbox.url}/")
    assert text.splitlines()[:4] == [
        text.splitlines()[0],
        "",
        "Per tenant:",
        "  solo  +1 -0",
    ]
    assert text.splitlines()[5] == (
        "Plan: 1 patient to update, 1 account to add, 0 accounts to remove."
    )
    assert text.splitlines()[6].startswith("Estimated cost: 1 $set-accounts (1 synchronous")
    assert len(text.splitlines()) == 7 and p not in text


def test_unresolvable_selectors_all_listed_nothing_else(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Cli
) -> None:
    client = sandbox.client()
    org = create_org(client)
    dup = create_patients(client, 2, mrn_prefix="dupe")
    client.update_resource(
        {
            **client.read_resource(*dup[1].split("/")),
            "identifier": [{"system": "urn:test:mrn", "value": "dupe-0"}],
        }
    )
    broken = tenant_yaml(
        "broken",
        org,
        [
            "Patient/00000000-0000-4000-8000-00000000dead",
            '{identifier: "urn:test:mrn|nobody"}',
            '{identifier: "urn:test:mrn|dupe-0"}',
            '{search: "name=NoSuchFamilyAnywhere"}',
            '{search: "unknownparam=1"}',
        ],
    )
    path = write(
        tmp_path,
        "t.yaml",
        broken
        + "---\n"
        + tenant_yaml("ghost", "Organization/00000000-0000-4000-8000-0000000000ff", [dup[0]]),
    )
    code, out, err = cli(sandbox, "plan", path)
    assert code == 1 and out == ""
    lines = err.splitlines()
    # The missing account and every selector problem, in one run (not one round at a time).
    assert lines == [
        f"{path}:21:3: error: spec.account: Organization/00000000-0000-4000-8000-0000000000ff does not exist (tenant 'ghost')",
        f"{path}:10:7: error: Patient/00000000-0000-4000-8000-00000000dead does not exist (tenant 'broken')",
        f"{path}:11:7: error: identifier urn:test:mrn|nobody matches 0 patients, expected exactly 1 (tenant 'broken')",
        f"{path}:12:7: error: identifier urn:test:mrn|dupe-0 matches 2 patients, expected exactly 1 (tenant 'broken')",
        f"{path}:13:7: error: search 'name=NoSuchFamilyAnywhere' matches no patients (tenant 'broken')",
        f"{path}:14:7: error: search 'unknownparam=1' was rejected by the server: Unknown search parameter: unknownparam (tenant 'broken')",
        "Error: 6 selectors or accounts did not resolve; nothing was changed.",
    ]
    path = write(tmp_path, "t.yaml", broken)
    code, out, err = cli(sandbox, "plan", path)
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"{path}:10:7: error: Patient/00000000-0000-4000-8000-00000000dead does not exist (tenant 'broken')",
        f"{path}:11:7: error: identifier urn:test:mrn|nobody matches 0 patients, expected exactly 1 (tenant 'broken')",
        f"{path}:12:7: error: identifier urn:test:mrn|dupe-0 matches 2 patients, expected exactly 1 (tenant 'broken')",
        f"{path}:13:7: error: search 'name=NoSuchFamilyAnywhere' matches no patients (tenant 'broken')",
        f"{path}:14:7: error: search 'unknownparam=1' was rejected by the server: Unknown search parameter: unknownparam (tenant 'broken')",
        "Error: 5 selectors or accounts did not resolve; nothing was changed.",
    ]


def test_request_count_for_3000_selectors(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Cli
) -> None:
    client = sandbox.client()
    org = create_org(client)
    refs = create_patients(client, 3000, mrn_prefix="bulk3k")
    selectors = refs[:1500] + [
        f'{{identifier: "urn:test:mrn|bulk3k-{i}"}}' for i in range(1500, 3000)
    ]
    path = write(tmp_path, "t.yaml", tenant_yaml("bulk", org, selectors))
    before = sandbox.stats()["requests"]
    code, out, err = cli(sandbox, "plan", path, "--no-estimate")
    after = sandbox.stats()["requests"]
    assert code == 0, err
    assert (
        out.splitlines()[-1]
        == "Plan: 3,000 patients to update, 3,000 accounts to add, 0 accounts to remove."
    )
    # token + account check + 2 id batches + 2 identifier batches + 1 compartment page
    assert after - before - 1 <= 10, after - before
    # The quota estimate counts compartments, 250 patients a request: 12 more.
    code, out, err = cli(sandbox, "plan", path)
    assert sandbox.stats()["requests"] - after - 1 <= 10 + 12
    assert out.splitlines()[-1] == (
        "Estimated cost: 3,000 $set-accounts (3,000 synchronous, 0 async) and 0 compartment "
        "writes ≈ 398,473 quota points ≈ 8.0 min at an assumed 50,000 points/min"
    )


def test_skip_access_and_out_conflict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "x.yaml", "--skip-access", "--out", "p.json"]) == 1
    assert "--skip-access cannot be combined with --out: apply plans access too" in (
        capsys.readouterr().err
    )


def test_embedded_default_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("MEDPLUM_BASE_URL", "MEDPLUM_CLIENT_ID", "MEDPLUM_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    examples = Path(__file__).resolve().parents[2] / "examples" / "tenants"
    assert main(["sandbox", "seed", "--patients", "30"]) == 0
    capsys.readouterr()
    code = main(["plan", str(examples), "--log-format", "json", "--detailed-exitcode", "-v"])
    out, err = capsys.readouterr()
    assert code == 2
    events = [json.loads(line) for line in err.splitlines()]
    assert events[0]["event"] == "no server configured: using the embedded sandbox"
    assert events[0] == {**events[0], "data": ".reconciler/sandbox.sqlite", "level": "debug"}
    assert "127.0.0.1" not in err  # never named by its random port
    assert "Target: embedded sandbox (.reconciler/sandbox.sqlite)" in out and "Plan: " in out
    # Without -v the line is not repeated on every run (the first, creating the file, warned).
    assert main(["plan", str(examples), "--log-format", "json", "-q"]) == 0
    assert "using the embedded sandbox" not in capsys.readouterr().err
