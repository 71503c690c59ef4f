"""Saved plans that cannot be bent (issue 26): always signed (a per-user key without
RECONCILER_PLAN_KEY), tied to the manifests they were made from, re-derived from them on the
live server, and too old under CI — each refused with nothing written."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from reconciler.plan.jsonform import digest_of
from reconciler.plan.signing import key_file
from tests.conftest import resign
from tests.integration.helpers import create_org, create_patients, tenant_yaml, write
from tests.reliability.conftest import Sandbox

Run = Any


def _setup(sb: Sandbox, tmp_path: Path, run: Run) -> tuple[Any, str, str, list[str], str, str]:
    client = sb.client()
    north, legacy = create_org(client), create_org(client)
    refs = create_patients(client, 3, accounts=[legacy])
    manifests = write(tmp_path, "t.yaml", tenant_yaml("north", north, refs))
    plan_file = str(tmp_path / "plan.json")
    code, _, err = run(sb, "plan", manifests, "--out", plan_file)
    assert code == 0, err
    return client, north, legacy, refs, manifests, plan_file


def _versions(client: Any, refs: list[str]) -> list[str]:
    return [client.read_resource(*r.split("/"))["meta"]["versionId"] for r in refs]


def test_a_plan_edited_on_a_laptop_without_the_ci_key_is_refused(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory()
    client, north, legacy, refs, _, plan_file = _setup(sb, tmp_path, run)
    assert "RECONCILER_PLAN_KEY" not in os.environ  # a laptop: the per-user key signs
    data = json.loads(Path(plan_file).read_text())
    assert data["signature"].startswith("hmac-sha256:")
    # Remove the unmanaged account through a fake tenant, re-digest (no key to re-sign).
    data["accounts"][legacy] = {"tenant": "fake", "membership": "authoritative", "propagate": True}
    for change in data["changes"]:
        change["after"], change["remove"] = [north], [legacy]
        change["tenants"] = ["fake", "north"]
        change["steps"] = [{"accounts": [north], "propagate": True}]
    data.pop("signature")
    data["plan_digest"] = digest_of(data)
    Path(plan_file).write_text(json.dumps(data))
    before = _versions(client, refs)
    code, out, err = run(sb, "apply", plan_file)
    assert (code, out) == (1, "")
    assert (
        err.splitlines()[-1] == f"Error: {plan_file}: the plan is not signed; nothing was changed"
    )
    assert _versions(client, refs) == before


def test_a_plan_signed_on_another_machine_is_refused_naming_the_plan_and_the_key(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory()
    client, _, _, refs, _, plan_file = _setup(sb, tmp_path, run)
    key = key_file()
    away = key.with_name(key.name + ".away")
    before = _versions(client, refs)
    key.rename(away)  # this user has no key: the plan was signed elsewhere
    try:
        code, out, err = run(sb, "apply", plan_file)
    finally:
        away.rename(key)
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        f"Error: {plan_file}: applying a saved plan needs the plan-signing key {key}, which "
        "this user does not have: the plan was made by another user or machine; plan again "
        "here, or set RECONCILER_PLAN_KEY to the key it was signed with; nothing was changed"
    )
    assert _versions(client, refs) == before


def test_even_a_re_signed_plan_must_follow_from_its_manifests(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory()
    client, north, legacy, refs, _, plan_file = _setup(sb, tmp_path, run)
    data = json.loads(Path(plan_file).read_text())
    data["accounts"][legacy] = {"tenant": "fake", "membership": "authoritative", "propagate": True}
    for change in data["changes"]:
        change["after"], change["remove"] = [north], [legacy]
        change["tenants"] = ["fake", "north"]
        change["steps"] = [{"accounts": [north], "propagate": True}]
    data["summary"]["remove"] = len(data["changes"])
    Path(plan_file).write_text(json.dumps(resign(data)))  # someone who holds the key
    before = _versions(client, refs)
    code, out, err = run(sb, "apply", plan_file)
    assert (code, out) == (1, "")
    assert (
        "the plan does not follow from its manifests: its managed accounts are not the manifests'"
        in err
    )
    assert _versions(client, refs) == before


def test_a_plan_needs_the_very_manifests_it_was_made_from(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory()
    client, _, _, refs, manifests, plan_file = _setup(sb, tmp_path, run)
    before = _versions(client, refs)
    original = Path(manifests).read_text()
    Path(manifests).write_text(
        original.replace("membership: authoritative", "membership: additive")
    )
    code, _, err = run(sb, "apply", plan_file)
    assert code == 1
    assert "are not the ones the plan was made from" in err and "plan again" in err
    Path(manifests).unlink()
    code, _, err = run(sb, "apply", plan_file)
    assert code == 1 and "apply PLANFILE needs the manifests the plan was made from" in err
    assert _versions(client, refs) == before
    # Found elsewhere with --manifests (a CI job's checkout, say), unchanged: applied.
    (tmp_path / "checkout").mkdir()
    elsewhere = write(tmp_path / "checkout", "t.yaml", original)
    code, out, err = run(sb, "apply", plan_file, "--manifests", elsewhere)
    assert code == 0, err
    assert "Apply complete! 3 patients updated, 3 accounts added" in out


def test_under_ci_an_old_plan_is_refused(
    sandbox_factory: Any, run: Run, tmp_path: Path, monkeypatch: Any
) -> None:
    sb = sandbox_factory()
    monkeypatch.setenv("RECONCILER_PLAN_KEY", "ci-plan-key-1234")
    plan_file = _setup(sb, tmp_path, run)[5]
    data = json.loads(Path(plan_file).read_text())
    data["created_at"] = "2020-01-01T00:00:00Z"
    Path(plan_file).write_text(json.dumps(resign(data)))
    monkeypatch.setenv("CI", "true")
    code, _, err = run(sb, "apply", plan_file)
    assert code == 1 and "old, more than --max-plan-age 24 h; plan again" in err
    code, _, err = run(sb, "apply", plan_file, "--max-plan-age", "0")
    assert code == 0, err


def test_the_per_user_key_is_private_and_said_once(
    sandbox_factory: Any, run: Run, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "fresh-config"))
    sb = sandbox_factory()
    client = sb.client()
    org = create_org(client)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", org, create_patients(client, 1)))
    key = tmp_path / "fresh-config" / "medplum-tenancy-reconciler" / "plan.key"
    code, _, err = run(sb, "plan", manifests, "--out", str(tmp_path / "a.json"))
    assert code == 0 and f"Created the plan-signing key {key}" in err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    code, _, err = run(sb, "plan", manifests, "--out", str(tmp_path / "b.json"))
    assert code == 0 and "Created the plan-signing key" not in err
    assert key.read_text().strip() not in err  # the key itself is never shown
