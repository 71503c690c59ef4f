"""Saved plans are re-derived and can be signed (hardening, point 2): an edited and
re-digested plan is refused with nothing written — whatever was changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.plan.jsonform import digest_of
from tests.conftest import resign
from tests.integration.helpers import create_org, create_patients, tenant_yaml, write
from tests.reliability.conftest import Sandbox

Run = Any


def _setup(
    sb: Sandbox, tmp_path: Path, run: Run
) -> tuple[Any, dict[str, Any], str, str, list[str]]:
    client = sb.client()
    north, legacy, evil = create_org(client), create_org(client), create_org(client)
    members = create_patients(client, 14, accounts=[north, legacy])
    manifests = write(tmp_path, "t.yaml", tenant_yaml("north", north, members[:2]))
    plan_file = str(tmp_path / "plan.json")
    code, _, err = run(sb, "plan", manifests, "--out", plan_file)
    assert code == 0, err
    data = json.loads(Path(plan_file).read_text())
    return client, data, plan_file, evil, members


def _save(data: dict[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(resign(data)))  # even one who holds the signing key


def _versions(client: Any, refs: list[str]) -> list[str]:
    return [client.read_resource(*r.split("/"))["meta"]["versionId"] for r in refs]


@pytest.mark.parametrize(
    "tamper",
    ["unmanaged-removed", "foreign-step", "guard-dropped-by-emptying-remove", "guard-field"],
)
def test_an_edited_and_re_digested_plan_writes_nothing(
    tamper: str, sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory()
    client, data, plan_file, evil, members = _setup(sb, tmp_path, run)
    change = data["changes"][0]
    north, legacy = change["before"]
    if tamper == "unmanaged-removed":  # print one thing, write another: drop legacy for good
        change["after"] = []
        change["remove"] = [north, legacy]
        change["steps"] = [{"accounts": [], "propagate": True}]
    elif tamper == "foreign-step":  # add another tenant to the patient and its compartment
        change["steps"] = [{"accounts": [legacy, evil], "propagate": True}]
    elif tamper == "guard-dropped-by-emptying-remove":
        for c in data["changes"]:
            c["remove"] = []
        data["guard"] = {}
    else:  # the guard field alone: the re-run guard still refuses
        data.pop("guard", None)
        data.pop("warnings", None)
    _save(data, plan_file)
    before = _versions(client, members)
    code, out, err = run(sb, "apply", plan_file)
    assert code == 1, err
    if tamper == "guard-field":  # the plan is shown, then refused by the re-run guard
        assert "tenant 'north' would lose 12 of its 14 current members" in err
    else:  # refused before anything is shown
        assert out == "" and "the plan does not hold together, so it was edited" in err
    assert _versions(client, members) == before


def test_signed_plans(sandbox_factory: Any, run: Run, tmp_path: Path, monkeypatch: Any) -> None:
    sb = sandbox_factory()
    monkeypatch.setenv("RECONCILER_PLAN_KEY", "plan-key-of-this-repo")
    client, data, plan_file, _, members = _setup(sb, tmp_path, run)
    assert data["signature"].startswith("hmac-sha256:")
    before = _versions(client, members)
    # Re-digested after an edit: the signature no longer matches.
    edited = dict(data, created_at="2020-01-01T00:00:00Z")
    signature = edited.pop("signature")
    edited["plan_digest"] = digest_of(edited)  # re-digested by someone without the key
    Path(plan_file).write_text(json.dumps(edited))
    code, _, err = run(sb, "apply", plan_file)
    assert code == 1 and "unsigned" not in err and "the plan is not signed" in err
    Path(plan_file).write_text(json.dumps({**edited, "signature": signature}))
    code, _, err = run(sb, "apply", plan_file)
    assert code == 1 and "the plan's signature does not match RECONCILER_PLAN_KEY" in err
    # Under CI=true, a saved plan is applied only with the key.
    monkeypatch.delenv("RECONCILER_PLAN_KEY")
    monkeypatch.setenv("CI", "true")
    code, _, err = run(sb, "apply", plan_file)
    assert code == 1 and "applying a saved plan under CI=true needs RECONCILER_PLAN_KEY" in err
    assert _versions(client, members) == before
