"""importer.py against the sandbox app."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from reconciler.errors import ReconcilerError
from reconciler.importer import write_manifest
from reconciler.manifest import load_manifests
from reconciler.medplum.client import MedplumClient
from tests.integration.helpers import create_org, create_patients, mrn


def test_import_lists_by_identifier_when_unique_else_by_id(
    client: MedplumClient, tmp_path: Path
) -> None:
    org = create_org(client, "Imported Clinic")
    refs = create_patients(client, 3, accounts=[org])
    out = io.StringIO()
    assert write_manifest(client, org, out, identifier_system="urn:test:mrn") == (3, "identifier")
    path = tmp_path / "imported.yaml"
    path.write_text(out.getvalue())
    (tenant,) = load_manifests([str(path)]).tenants  # a valid manifest
    assert tenant.name == "imported-clinic"
    assert sorted(s.value for s in tenant.patients) == sorted(mrn(client, r) for r in refs)
    # A duplicate identifier elsewhere on the server makes identifiers ambiguous: ids instead.
    dup = client.read_resource(*refs[0].split("/"))
    client.create_resource({"resourceType": "Patient", "identifier": dup["identifier"]})
    out = io.StringIO()
    assert write_manifest(client, org, out, identifier_system="urn:test:mrn") == (3, "id")
    assert sorted(
        line.strip("- \n") for line in out.getvalue().splitlines() if "Patient/" in line
    ) == sorted(refs)


def test_import_of_an_account_without_members_is_an_error(client: MedplumClient) -> None:
    org = create_org(client)
    with pytest.raises(ReconcilerError, match="has no member patients"):
        write_manifest(client, org, io.StringIO())
