"""Other resources in a tenant (design section 9), through the CLI against a sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from reconciler.medplum.accounts import get_resource_accounts
from reconciler.schemas import load_schema
from tests.integration.helpers import create_org, create_patients, write
from tests.sandbox_process import InProcessSandbox

Cli = Any


def _setup(sb: InProcessSandbox) -> dict[str, Any]:
    client = sb.client()
    north, legacy = create_org(client, "North"), create_org(client, "Legacy")
    (patient,) = create_patients(client, 1)
    pracs = [
        "Practitioner/" + client.create_resource(
            {"resourceType": "Practitioner", "name": [{"family": f"Doc{i}"}],
             "identifier": [{"system": "urn:npi", "value": f"npi-{i}"}],
             "meta": {"accounts": [{"reference": legacy}]}}
        )["id"]
        for i in range(2)
    ]  # fmt: skip
    locations = [
        "Location/" + client.create_resource(
            {"resourceType": "Location", "name": f"Room {i}",
             "managingOrganization": {"reference": north}}
        )["id"]
        for i in range(2)
    ]  # fmt: skip
    stale_location = (
        "Location/"
        + client.create_resource(
            {
                "resourceType": "Location",
                "name": "Old",
                "meta": {"accounts": [{"reference": north}]},
            }
        )["id"]
    )
    stale_prac = (
        "Practitioner/"
        + client.create_resource(
            {"resourceType": "Practitioner", "meta": {"accounts": [{"reference": north}]}}
        )["id"]
    )
    return {"client": client, "north": north, "legacy": legacy, "patient": patient,
            "pracs": pracs, "locations": locations, "stale_location": stale_location,
            "stale_prac": stale_prac}  # fmt: skip


def _manifest(tmp_path: Path, w: dict[str, Any]) -> str:
    return write(
        tmp_path,
        "t.yaml",
        "apiVersion: reconciler/v1\nkind: Tenant\nmetadata: {name: north}\nspec:\n"
        f"  account: {w['north']}\n  patients:\n    - {w['patient']}\n  resources:\n"
        f"    - {w['pracs'][0]}\n"
        '    - {type: Practitioner, identifier: "urn:npi|npi-1"}\n'
        f'    - search: "Location?organization={w["north"]}"\n',
    )


def test_practitioners_and_locations_planned_and_applied_in_one_run(
    make_sandbox: Any, tmp_path: Path, cli: Cli
) -> None:
    sb = make_sandbox()
    w = _setup(sb)
    client = w["client"]
    manifests = _manifest(tmp_path, w)
    code, out, _ = cli(sb, "plan", manifests, "--no-estimate")
    assert code == 0
    assert out.splitlines()[-1] == (
        "Plan: 1 patient and 6 other resources to update, 5 accounts to add, 2 accounts to remove."
    )
    assert f"  ~ {w['pracs'][0]}" in out and f"  ~ {w['locations'][1]}" in out
    # Authoritative per named type: the Location and the Practitioner that carry north but
    # are not listed lose it.
    code, data_out, _ = cli(sb, "plan", manifests, "--format", "json", "--no-estimate")
    data = json.loads(data_out)
    jsonschema.Draft202012Validator(load_schema("plan.schema.json")).validate(data)
    assert data["summary"]["resources"] == 6
    by_ref = {c["resource"]: c for c in data["resource_changes"]}
    assert set(by_ref) == {*w["pracs"], *w["locations"], w["stale_location"], w["stale_prac"]}
    assert by_ref[w["pracs"][0]]["after"] == [w["legacy"], w["north"]]
    assert by_ref[w["pracs"][0]]["steps"] == [
        {"accounts": [w["legacy"], w["north"]], "propagate": False}
    ]
    code, out, err = cli(sb, "apply", manifests, "--auto-approve")
    assert code == 0, err
    assert "Apply complete! 1 patient and 6 other resources updated" in out

    def accounts(ref: str) -> list[str]:
        return get_resource_accounts(client.read_resource(*ref.split("/")))

    assert accounts(w["pracs"][0]) == [w["legacy"], w["north"]]
    assert accounts(w["pracs"][1]) == [w["legacy"], w["north"]]
    assert all(accounts(loc) == [w["north"]] for loc in w["locations"])
    assert accounts(w["stale_location"]) == [] and accounts(w["stale_prac"]) == []
    code, out, _ = cli(sb, "plan", manifests, "-q", "--detailed-exitcode")
    assert code == 0 and out.splitlines()[-1] == "No changes. Live accounts match the manifests."


def test_authoritative_removal_touches_only_the_named_types(
    make_sandbox: Any, tmp_path: Path, cli: Cli
) -> None:
    sb = make_sandbox()
    w = _setup(sb)
    only_locations = write(
        tmp_path,
        "t.yaml",
        "apiVersion: reconciler/v1\nkind: Tenant\nmetadata: {name: north}\nspec:\n"
        f"  account: {w['north']}\n  resources:\n"
        f'    - search: "Location?organization={w["north"]}"\n',
    )
    code, _, err = cli(sb, "apply", only_locations, "--auto-approve")
    assert code == 0, err
    client = w["client"]
    assert get_resource_accounts(client.read_resource(*w["stale_location"].split("/"))) == []
    # The Practitioner carrying north is kept: this tenant names no Practitioner.
    assert get_resource_accounts(client.read_resource(*w["stale_prac"].split("/"))) == [w["north"]]


def test_saved_plan_staleness_per_resource_and_import(
    make_sandbox: Any, tmp_path: Path, cli: Cli
) -> None:
    sb = make_sandbox()
    w = _setup(sb)
    client = w["client"]
    manifests = _manifest(tmp_path, w)
    plan_file = str(tmp_path / "plan.json")
    assert cli(sb, "plan", manifests, "--out", plan_file)[0] == 0
    loc = client.read_resource(*w["locations"][0].split("/"))
    client.update_resource({**loc, "name": "Renamed"})
    code, _, err = cli(sb, "apply", plan_file)
    assert code == 1 and f"{w['locations'][0]} changed since the plan" in err
    assert cli(sb, "apply", manifests, "--auto-approve")[0] == 0
    code, out, _ = cli(sb, "import", "--account", w["north"], "--resources",
                       "Location,Practitioner")  # fmt: skip
    assert code == 0
    assert "  resources:\n" in out
    for ref in (*w["locations"], *w["pracs"]):
        assert f"    - {ref}\n" in out
