"""Tenant access through the CLI (design section 8): plan, apply, verify --access, import
--access, guards and saved plans, against a sandbox seeded with the demo staff."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from reconciler.sandbox import seed as seeding
from reconciler.schemas import load_schema
from tests.integration.helpers import demo_data
from tests.sandbox_process import InProcessSandbox

NURSE_NORTH = "ProjectMembership/0f1e0006-0000-4000-8000-000000000001"
NORTH = f"Organization/{seeding.ORG_NORTH}"
SOUTH = f"Organization/{seeding.ORG_SOUTH}"
Cli = Any


@pytest.fixture
def demo(make_sandbox: Any, tmp_path: Path) -> tuple[InProcessSandbox, Path]:
    data, manifests = demo_data(tmp_path, patients=24, per_patient=2)
    return make_sandbox(data=data), manifests


def seen_by(sb: InProcessSandbox, membership: str, compartment: str | None = None) -> int:
    params = {"_summary": "count", **({"_compartment": compartment} if compartment else {})}
    r = httpx.get(
        f"{sb.url}/fhir/R4/Patient",
        params=params,
        headers={"Authorization": f"Bearer {sb.token()}", "X-Medplum-On-Behalf-Of": membership},
    )
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def patients_of(sb: InProcessSandbox, account: str) -> int:
    r = httpx.get(
        f"{sb.url}/fhir/R4/Patient",
        params={"_summary": "count", "_compartment": account},
        headers={"Authorization": f"Bearer {sb.token()}"},
    )
    return int(r.json()["total"])


def move_nurse_north_to_south(manifests: Path) -> None:
    north = manifests / "northside.yaml"
    north.write_text(
        north.read_text().replace(
            "        - ProjectMembership/0f1e0006-0000-4000-8000-000000000001   # Nurse North, by id\n",
            "",
        )
    )
    south = manifests / "southside.yaml"
    south.write_text(south.read_text() + f"        - {NURSE_NORTH}\n")


def test_a_member_moved_between_tenants_sees_exactly_the_new_one(demo: Any, cli: Cli) -> None:
    sb, manifests = demo
    code, out, err = cli(sb, "apply", str(manifests), "--auto-approve")
    assert code == 0, err
    assert "Access updated: 5 grants added, 0 grants revoked, on 5 memberships." in out
    assert seen_by(sb, NURSE_NORTH) == patients_of(sb, NORTH) > 0
    move_nurse_north_to_south(manifests)
    code, out, _ = cli(sb, "plan", str(manifests), "--no-estimate")
    assert code == 0
    lines = out.splitlines()
    block = lines.index(
        f'  ~ {NURSE_NORTH}  (Practitioner/0f1e0002-0000-4000-8000-000000000011 "Nurse North")'
    )
    assert lines[block + 1].startswith(
        f"      + AccessPolicy/{seeding.CLINIC_STAFF_POLICY}  organization={SOUTH}"
    )
    assert lines[block + 1].endswith("(tenant southside)")
    assert lines[block + 2].startswith(
        f"      - AccessPolicy/{seeding.CLINIC_STAFF_POLICY}  organization={NORTH}"
    )
    assert lines[block + 2].endswith("(tenant northside, authoritative)")
    assert lines[-2:] == [
        "Plan: 0 patients to update, 0 accounts to add, 0 accounts to remove.",
        "Access: 1 grant to add, 1 grant to revoke, on 1 membership.",
    ]
    code, out, err = cli(sb, "apply", str(manifests), "--auto-approve")
    assert code == 0, err
    assert "Access updated: 1 grant added, 1 grant revoked, on 1 membership." in out
    assert seen_by(sb, NURSE_NORTH) == patients_of(sb, SOUTH)
    assert seen_by(sb, NURSE_NORTH, NORTH) == 0 or patients_of(sb, NORTH) == 0
    code, out, _ = cli(sb, "verify", str(manifests), "--access")
    assert code == 0
    assert "Checked access of 5 memberships to 3 tenants: 0 mismatches." in out
    code, out, _ = cli(sb, "plan", str(manifests), "--detailed-exitcode", "-q")
    assert code == 0 and out.splitlines()[-1] == "No changes. Live accounts match the manifests."


def test_fail_open_is_refused_and_nothing_is_written(demo: Any, cli: Cli) -> None:
    sb, manifests = demo
    assert cli(sb, "apply", str(manifests), "--auto-approve")[0] == 0
    north = manifests / "northside.yaml"
    text = north.read_text()
    start = text.index("      members:\n")
    north.write_text(text[:start] + "      members: []\n")
    before = _membership_versions(sb)
    code, out, err = cli(sb, "apply", str(manifests), "--auto-approve")
    assert code == 1 and out == ""
    assert (
        f"Error: {NURSE_NORTH} would be left with no access policy, which Medplum treats as "
        "unrestricted access"
    ) in err.splitlines()
    assert err.splitlines()[-1] == "Error: the plan was refused (2 problems); nothing was changed."
    assert _membership_versions(sb) == before


def _membership_versions(sb: InProcessSandbox) -> dict[str, str]:
    client = sb.client()
    return {m["id"]: m["meta"]["versionId"] for m in client.search_all("ProjectMembership", [])}


def test_json_plan_saved_plan_staleness_and_redaction(demo: Any, cli: Cli, tmp_path: Path) -> None:
    sb, manifests = demo
    code, out, _ = cli(sb, "plan", str(manifests), "--format", "json", "--no-estimate")
    assert code == 0
    data = json.loads(out)
    jsonschema.Draft202012Validator(load_schema("plan.schema.json")).validate(data)
    assert data["summary"]["memberships"] == 5 and data["summary"]["grants"] == 5
    assert data["summary"]["revocations"] == 0
    first = data["access_changes"][0]
    assert first["membership"] == NURSE_NORTH and first["before"] == []
    assert first["grant"] == [
        {"policy": f"AccessPolicy/{seeding.CLINIC_STAFF_POLICY}", "parameter": "organization",
         "account": NORTH, "tenant": "northside"}
    ]  # fmt: skip
    assert first["steps"] == [{"access": first["after"], "phase": "grant"}]
    # A saved plan goes stale when a membership moves.
    plan_file = str(tmp_path / "plan.json")
    assert cli(sb, "plan", str(manifests), "--out", plan_file)[0] == 0
    client = sb.client()
    nurse = client.read_resource(*NURSE_NORTH.split("/"))
    client.update_resource({**nurse, "identifier": [{"system": "urn:x", "value": "moved"}]})
    code, _, err = cli(sb, "apply", plan_file)
    assert code == 1 and f"{NURSE_NORTH} changed since the plan" in err
    # Redacted plans hide membership and profile ids.
    code, out, _ = cli(sb, "plan", str(manifests), "--redact", "--no-estimate")
    assert code == 0
    assert "0f1e0006-0000-4000-8000-000000000001" not in out
    assert "0f1e0002-0000-4000-8000-000000000011" not in out and "Nurse North" not in out


def test_mass_grant_guard(make_sandbox: Any, tmp_path: Path, cli: Cli) -> None:
    sb = make_sandbox()
    client = sb.client()
    org = "Organization/" + client.create_resource({"resourceType": "Organization"})["id"]
    policy = client.create_resource(
        {"resourceType": "AccessPolicy", "name": "p", "compartment": {"reference": "%organization"},
         "resource": [{"resourceType": "Patient", "criteria": "Patient?_compartment=%organization"}]}
    )  # fmt: skip
    refs = []
    for i in range(11):
        m = client.create_resource(
            {"resourceType": "ProjectMembership", "user": {"reference": f"ClientApplication/c{i}"},
             "profile": {"reference": f"Practitioner/p{i}"},
             "access": [{"policy": {"reference": f"AccessPolicy/{policy['id']}"},
                         "parameter": [{"name": "organization",
                                        "valueReference": {"reference": "Organization/elsewhere"}}]}]}
        )  # fmt: skip
        refs.append(f"ProjectMembership/{m['id']}")
    manifest = tmp_path / "t.yaml"
    manifest.write_text(
        "apiVersion: reconciler/v1\nkind: Tenant\nmetadata: {name: t}\nspec:\n"
        f"  account: {org}\n  access:\n    - policy: AccessPolicy/{policy['id']}\n"
        "      members:\n" + "".join(f"        - {r}\n" for r in refs)
    )
    code, out, _ = cli(sb, "plan", str(manifest), "--no-estimate")
    assert code == 0 and out.splitlines()[2] == (
        "Warning: the plan grants access to 11 memberships (more than 10); apply will refuse "
        "without --allow-mass-grant"
    )
    before = _membership_versions(sb)
    code, _, err = cli(sb, "apply", str(manifest), "--auto-approve")
    assert code == 1
    assert err.splitlines()[-1] == (
        "Error: refusing to apply: the plan grants access to 11 memberships (more than 10) "
        "(review the plan; --allow-mass-grant to proceed); nothing was changed"
    )
    assert _membership_versions(sb) == before
    code, _, err = cli(sb, "apply", str(manifest), "--auto-approve", "--allow-mass-grant",
                       "--max-grants", "5")  # fmt: skip
    assert (
        code == 1
        and "the plan grants 11 (accounts added and access entries), more than --max-grants 5"
        in err
    )
    code, out, err = cli(sb, "apply", str(manifest), "--auto-approve", "--allow-mass-grant")
    assert code == 0, err
    assert "Access updated: 11 grants added, 0 grants revoked, on 11 memberships." in out


def test_hand_made_drift_is_found_by_verify_access_and_repaired(demo: Any, cli: Cli) -> None:
    sb, manifests = demo
    assert cli(sb, "apply", str(manifests), "--auto-approve")[0] == 0
    client = sb.client()
    nurse = client.read_resource(*NURSE_NORTH.split("/"))
    extra = {"policy": {"reference": f"AccessPolicy/{seeding.CLINIC_STAFF_POLICY}"},
             "parameter": [{"name": "organization", "valueReference": {"reference": SOUTH}}]}  # fmt: skip
    client.update_resource({**nurse, "access": [*nurse["access"], extra]})
    code, out, _ = cli(sb, "verify", str(manifests), "--access", "--detailed-exitcode")
    assert code == 2
    assert (
        f"  {NURSE_NORTH}: holds AccessPolicy/{seeding.CLINIC_STAFF_POLICY}  organization={SOUTH},"
        " which tenant southside does not grant it"
    ) in out.splitlines()
    assert f"  {NURSE_NORTH}: sees" in out  # more than northside's patients in all
    code, out, _ = cli(sb, "verify", str(manifests), "--access", "--repair")
    assert code == 0, out
    assert "Repaired access of 1 of 1 membership: 0 grants added, 1 grant revoked." in out
    assert seen_by(sb, NURSE_NORTH) == patients_of(sb, NORTH)


def test_import_access_round_trip(demo: Any, cli: Cli, tmp_path: Path) -> None:
    sb, manifests = demo
    assert cli(sb, "apply", str(manifests), "--auto-approve")[0] == 0
    code, out, _ = cli(sb, "import", "--account", NORTH, "--access", "--name", "northside")
    assert code == 0
    assert f"        - {NURSE_NORTH}\n" in out
    imported = tmp_path / "imported"
    imported.mkdir()
    (imported / "northside.yaml").write_text(out)
    for other in ("southside.yaml", "research.yaml"):
        shutil.copy(manifests / other, imported / other)
    code, out, _ = cli(sb, "plan", str(imported), "-q", "--detailed-exitcode")
    assert code == 0 and out.splitlines()[-1] == "No changes. Live accounts match the manifests."
