"""plan/live_resources.py against the sandbox app: every kind of resource selector, the
authoritative scope per named type, and the problems named."""

from __future__ import annotations

from pathlib import Path

from reconciler.manifest import load_manifests
from reconciler.medplum.client import MedplumClient
from reconciler.plan.live import resolve_accounts
from reconciler.plan.live_resources import read_live_resources
from tests.integration.helpers import create_org, write


def tenant(tmp_path: Path, name: str, account: str, resources: list[str], **kw: str) -> str:
    lines = [
        "apiVersion: reconciler/v1",
        "kind: Tenant",
        "metadata:",
        f"  name: {name}",
        "spec:",
        f"  account: {account}",
        f"  membership: {kw.get('membership', 'authoritative')}",
        "  resources:",
        *(f"    - {r}" for r in resources),
    ]
    return write(tmp_path, f"{name}.yaml", "\n".join(lines) + "\n")


def create(
    client: MedplumClient, rtype: str, accounts: tuple[str, ...] = (), **fields: object
) -> str:
    body: dict[str, object] = {"resourceType": rtype, **fields}
    if accounts:
        body["meta"] = {"accounts": [{"reference": a} for a in accounts]}
    return f"{rtype}/{client.create_resource(body)['id']}"


def test_selectors_and_the_authoritative_scope_of_the_named_types(
    client: MedplumClient, tmp_path: Path
) -> None:
    north, legacy = create_org(client), create_org(client)
    by_id = create(client, "Location", name="Ward A")
    by_ident = create(client, "Practitioner", identifier=[{"system": "urn:npi", "value": "1"}])
    searched = create(client, "Location", name="Clinic", managingOrganization={"reference": north})
    stale_location = create(client, "Location", (north, legacy), name="Old ward")
    other_type = create(client, "HealthcareService", (north,), name="not named by the tenant")
    path = tenant(tmp_path, "north", north, [
        by_id,
        '{type: Practitioner, identifier: "urn:npi|1"}',
        f'{{search: "Location?organization={north}"}}',
    ])  # fmt: skip
    tenants = load_manifests([path]).tenants
    resources, members, problems = read_live_resources(
        client, tenants, resolve_accounts(client, tenants)
    )
    assert problems == []
    assert members == {"north": frozenset({by_id, by_ident, searched})}
    # In scope: the selected ones, and every Location or Practitioner carrying the account (it
    # may lose it); a HealthcareService is not: the tenant names no such type.
    assert sorted(resources) == sorted([by_id, by_ident, searched, stale_location])
    assert other_type not in resources
    assert resources[stale_location].accounts == (north, legacy)
    assert resources[by_ident].identifier == "urn:npi|1"


def test_no_resources_reads_nothing(client: MedplumClient, tmp_path: Path) -> None:
    sent = client.requests_sent
    assert read_live_resources(client, [], {}) == ({}, {}, [])
    assert client.requests_sent == sent


def test_problems_name_file_line_and_tenant(client: MedplumClient, tmp_path: Path) -> None:
    north = create_org(client)
    create(client, "Practitioner", identifier=[{"system": "urn:npi", "value": "2"}])
    create(client, "Practitioner", identifier=[{"system": "urn:npi", "value": "2"}])
    path = tenant(tmp_path, "north", north, [
        "Location/00000000-0000-4000-8000-00000000dead",
        '{type: Practitioner, identifier: "urn:npi|2"}',
        '{search: "Location?name=NoSuchWard"}',
        '{search: "Location?no-such-param=1"}',
    ])  # fmt: skip
    tenants = load_manifests([path]).tenants
    _, _, problems = read_live_resources(client, tenants, resolve_accounts(client, tenants))
    assert problems == [
        f"{path}:9:7: error: Location/00000000-0000-4000-8000-00000000dead does not exist "
        "(tenant 'north')",
        f"{path}:10:7: error: Practitioner identifier urn:npi|2 matches 2 resources, expected "
        "exactly 1 (tenant 'north')",
        f"{path}:11:7: error: search 'Location?name=NoSuchWard' matches no resources (tenant "
        "'north')",
        f"{path}:12:7: error: search 'Location?no-such-param=1' was rejected by the server: "
        "Unknown search parameter: no-such-param (tenant 'north')",
    ]
