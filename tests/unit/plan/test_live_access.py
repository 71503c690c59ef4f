"""plan/live_access.py against the sandbox app seeded with the demo staff: every kind of member
selector, the memberships already holding a granted policy, and every problem named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.manifest import load_manifests
from reconciler.medplum.client import MedplumClient
from reconciler.plan.live_access import read_access
from reconciler.sandbox import seed as seeding
from tests.integration.helpers import write
from tests.sandbox_process import AppSandbox

POLICY = f"AccessPolicy/{seeding.CLINIC_STAFF_POLICY}"
NORTH = f"Organization/{seeding.ORG_NORTH}"
SOUTH = f"Organization/{seeding.ORG_SOUTH}"
ID = "0f1e0006-0000-4000-8000-00000000000"  # + 1..5: the demo staff (README, "Demo data")
M = f"ProjectMembership/{ID}"


@pytest.fixture
def staff(app_sandbox: AppSandbox, client: MedplumClient) -> MedplumClient:
    seeding.seed(app_sandbox.app.store, patients=0, per_patient=0)
    return client


def manifest(tmp_path: Path, account: str, policy: str, members: list[str], **kw: str) -> str:
    lines = [
        "apiVersion: reconciler/v1",
        "kind: Tenant",
        "metadata:",
        f"  name: {kw.get('name', 'north')}",
        "spec:",
        f"  account: {account}",
        f"  membership: {kw.get('membership', 'authoritative')}",
        "  access:",
        f"    - policy: {policy}",
        f"      parameter: {kw.get('parameter', 'organization')}",
        "      members:",
        *(f"        - {m}" for m in members),
    ]
    return write(tmp_path, f"{kw.get('name', 'north')}.yaml", "\n".join(lines) + "\n")


def read(client: MedplumClient, *paths: str) -> tuple[dict[str, Any], dict[Any, Any], list[str]]:
    tenants = load_manifests(list(paths)).tenants
    return read_access(client, tenants)


def test_every_kind_of_member_and_the_holders_of_a_granted_policy(
    staff: MedplumClient, tmp_path: Path
) -> None:
    # Front Desk South already holds the policy (for south): in scope, it may lose it.
    holder = staff.read_resource("ProjectMembership", f"{ID}4")
    staff.update_resource(
        {**holder, "access": [{"policy": {"reference": POLICY},
                               "parameter": [{"name": "organization",
                                              "valueReference": {"reference": SOUTH}}]}]}
    )  # fmt: skip
    path = manifest(
        tmp_path,
        NORTH,
        POLICY,
        [
            f"{M}1",
            '{profile: "Practitioner/0f1e0002-0000-4000-8000-000000000012"}',
            '{identifier: "https://example.org/staff|s-0001"}',
            '{search: "user-name=research-analyst"}',
        ],
    )
    memberships, grants, problems = read(staff, path)
    assert problems == []
    assert grants == {("north", 0): frozenset(f"{M}{i}" for i in (1, 2, 3, 5))}
    assert sorted(memberships) == [f"{M}{i}" for i in (1, 2, 3, 4, 5)]
    assert memberships[f"{M}2"].profile == "Practitioner/0f1e0002-0000-4000-8000-000000000012"
    assert memberships[f"{M}2"].display == "Front Desk North"
    assert memberships[f"{M}4"].entries and not memberships[f"{M}1"].entries


def test_additive_tenants_do_not_scan_for_holders(staff: MedplumClient, tmp_path: Path) -> None:
    path = manifest(tmp_path, NORTH, POLICY, [f"{M}1"], membership="additive")
    memberships, _, problems = read(staff, path)
    assert problems == [] and sorted(memberships) == [f"{M}1"]


def test_every_problem_is_named_with_file_and_line(staff: MedplumClient, tmp_path: Path) -> None:
    path = manifest(
        tmp_path,
        NORTH,
        POLICY,
        [
            "ProjectMembership/00000000-0000-4000-8000-00000000dead",
            '{profile: "Practitioner/00000000-0000-4000-8000-00000000dead"}',
            '{identifier: "https://example.org/staff|nobody"}',
            '{search: "user-name=nobody-at-all"}',
            '{search: "no-such-param=1"}',
        ],
    )
    other = staff.create_resource({"resourceType": "AccessPolicy", "name": "flat",
                                   "resource": [{"resourceType": "Patient"}]})  # fmt: skip
    flat = manifest(tmp_path, SOUTH, f"AccessPolicy/{other['id']}", [f"{M}3"], name="south")
    ghost = manifest(
        tmp_path,
        f"Organization/{seeding.ORG_RESEARCH}",
        "AccessPolicy/00000000-0000-4000-8000-00000000dead",
        [f"{M}5"],
        name="ghost",
    )
    _, _, problems = read(staff, path, flat, ghost)
    assert problems == [
        f"{flat}:9:7: error: spec.access[0].policy: AccessPolicy/{other['id']} has compartment "
        "none, not %organization: what its members create would not go into the tenant (tenant "
        "'south')",
        f"{flat}:9:7: error: spec.access[0].policy: AccessPolicy/{other['id']} rule 1 (Patient) "
        "grants every Patient in the project, whatever the tenant (tenant 'south')",
        f"{ghost}:9:7: error: spec.access[0].policy: AccessPolicy/00000000-0000-4000-8000-"
        "00000000dead does not exist (tenant 'ghost')",
        f"{path}:12:11: error: member ProjectMembership/00000000-0000-4000-8000-00000000dead "
        "does not exist (tenant 'north')",
        f"{path}:13:11: error: member profile Practitioner/00000000-0000-4000-8000-00000000dead "
        "matches 0 memberships, expected exactly 1 (tenant 'north')",
        f"{path}:14:11: error: member identifier https://example.org/staff|nobody matches 0 "
        "memberships, expected exactly 1 (tenant 'north')",
        f"{path}:15:11: error: member search 'user-name=nobody-at-all' matches no memberships "
        "(tenant 'north')",
        f"{path}:16:11: error: member search 'no-such-param=1' was rejected by the server: "
        "Unknown search parameter: no-such-param (tenant 'north')",
    ]
