"""plan/live.py: selectors resolved against a server in batches, every problem listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import ResolveError
from reconciler.manifest import load_manifests
from reconciler.medplum.client import MedplumClient
from reconciler.plan.live import read_live_state
from tests.integration.helpers import create_org, create_patients, mrn, write


def test_every_kind_of_selector_and_the_authoritative_members(
    client: MedplumClient, tmp_path: Path
) -> None:
    org, other = create_org(client, "North"), create_org(client, "Other")
    by_id, by_ident, by_search, old_member, stranger = create_patients(client, 5)
    client.set_accounts(old_member, [org])  # a member today, not in the manifest
    client.set_accounts(stranger, [other])
    family = client.read_resource(*by_search.split("/"))["name"][0]["family"]
    client.update_resource(
        {**client.read_resource(*by_search.split("/")), "name": [{"family": "Zebra"}]}
    )
    path = write(
        tmp_path,
        "t.yaml",
        f"""apiVersion: reconciler/v1
kind: Tenant
metadata: {{name: north}}
spec:
  account: {org}
  patients:
    - {by_id}
    - identifier: "{mrn(client, by_ident)}"
    - search: "name=Zebra"
""",
    )
    before = client.requests_sent
    live = read_live_state(client, load_manifests([path]).tenants, parallelism=4)
    assert live.accounts == {"north": org}
    assert live.members == {"north": frozenset({by_id, by_ident, by_search})}
    # In scope: the three members and the current member that may lose the account.
    assert set(live.patients) == {by_id, by_ident, by_search, old_member}
    assert live.patients[old_member].accounts == (org,)
    assert family != "Zebra"
    # One account read, one id batch, one identifier batch, one search, one member scan.
    assert client.requests_sent - before == 5


def test_unresolvable_selectors_are_all_listed_with_file_and_line(
    client: MedplumClient, tmp_path: Path
) -> None:
    org = create_org(client)
    (ref,) = create_patients(client, 1)
    path = write(
        tmp_path,
        "t.yaml",
        f"""apiVersion: reconciler/v1
kind: Tenant
metadata: {{name: broken}}
spec:
  account: {org}
  patients:
    - {ref}
    - Patient/00000000-0000-4000-8000-000000000001
    - identifier: "urn:nowhere|x"
    - search: "name=NobodyHasThisName"
    - Patient/00000000-0000-4000-8000-000000000002
""",
    )
    with pytest.raises(ResolveError) as info:
        read_live_state(client, load_manifests([path]).tenants)
    # In the list's order, though by-id selectors are read apart from the others.
    assert info.value.problems == [
        f"{path}:8:7: error: Patient/00000000-0000-4000-8000-000000000001 does not exist "
        "(tenant 'broken')",
        f"{path}:9:7: error: identifier urn:nowhere|x matches 0 patients, expected exactly 1 "
        "(tenant 'broken')",
        f"{path}:10:7: error: search 'name=NobodyHasThisName' matches no patients "
        "(tenant 'broken')",
        f"{path}:11:7: error: Patient/00000000-0000-4000-8000-000000000002 does not exist "
        "(tenant 'broken')",
    ]


def test_a_missing_account_is_reported_together_with_the_selectors(
    client: MedplumClient, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "t.yaml",
        """apiVersion: reconciler/v1
kind: Tenant
metadata: {name: ghost}
spec:
  account: Organization/00000000-0000-4000-8000-00000000dead
  patients: [Patient/00000000-0000-4000-8000-000000000002]
""",
    )
    with pytest.raises(ResolveError) as info:
        read_live_state(client, load_manifests([path]).tenants)
    assert info.value.problems == [
        f"{path}:5:3: error: spec.account: Organization/00000000-0000-4000-8000-00000000dead "
        "does not exist (tenant 'ghost')",
        f"{path}:6:14: error: Patient/00000000-0000-4000-8000-000000000002 does not exist "
        "(tenant 'ghost')",
    ]
