"""Every public MedplumClient method against a real sandbox process."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.medplum.accounts import get_resource_accounts, resource_has_account
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import AuthError, HTTPStatusError, JobError
from tests.sandbox_process import MEMBER, InProcessSandbox


@pytest.fixture
def client(sandbox: InProcessSandbox) -> MedplumClient:
    return sandbox.client()


def _org(client: MedplumClient) -> str:
    return (
        "Organization/"
        + client.create_resource({"resourceType": "Organization", "name": "C"})["id"]
    )


def test_crud_and_accounts(client: MedplumClient) -> None:
    o1, o2 = _org(client), _org(client)
    p = client.create_resource(
        {"resourceType": "Patient", "name": [{"family": "Api"}]}, accounts=[o1]
    )
    assert get_resource_accounts(p) == [o1] and resource_has_account(p, o1)
    assert client.read_resource("Patient", p["id"])["name"] == [{"family": "Api"}]
    updated = client.update_resource(p, accounts=[o1, o2], if_match=p["meta"]["versionId"])
    assert get_resource_accounts(updated) == [o1, o2]
    with pytest.raises(HTTPStatusError) as info:
        client.update_resource(p, if_match=p["meta"]["versionId"])
    assert info.value.status == 412
    first = client.create_resource(
        {
            "resourceType": "Basic",
            "code": {"text": "c"},
            "identifier": [{"system": "urn:c", "value": "1"}],
        },
        if_none_exist="identifier=urn:c|1",
    )
    again = client.create_resource(
        {
            "resourceType": "Basic",
            "code": {"text": "c"},
            "identifier": [{"system": "urn:c", "value": "1"}],
        },
        if_none_exist="identifier=urn:c|1",
    )
    assert first["id"] == again["id"]
    client.delete_resource("Patient", p["id"])
    with pytest.raises(HTTPStatusError) as info:
        client.read_resource("Patient", p["id"])
    assert info.value.status == 404 and info.value.outcome_text == "Not found"


def test_search_read_many_identifiers_and_compartments(client: MedplumClient) -> None:
    o = _org(client)
    ids = []
    for i in range(25):
        p = client.create_resource(
            {"resourceType": "Patient", "identifier": [{"system": "urn:rm", "value": f"R-{i}"}]},
            accounts=[o],
        )
        ids.append(p["id"])
        client.create_resource(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": f"Patient/{p['id']}"},
            }
        )
    bundle = client.search("Patient", {"_compartment": o, "_count": "5"})
    assert len(bundle["entry"]) == 5
    assert [p["id"] for p in client.search_all("Patient", {"_compartment": o}, page_size=7)] == ids
    assert [
        p["id"]
        for p in client.search_all(
            "Patient", {"_compartment": o}, page_size=20, sort_by_last_updated=True
        )
    ] == ids
    found = client.read_many(
        "Patient", [*ids[:10], "00000000-0000-4000-8000-000000000000"], batch_size=4
    )
    assert sorted(p["id"] for p in found) == sorted(ids[:10])
    by_ident = client.search_by_identifiers(
        "Patient", ["urn:rm|R-3", "urn:rm|R-4", "urn:rm|none"], batch_size=2
    )
    assert [p["id"] for p in by_ident["urn:rm|R-3"]] == [ids[3]] and by_ident["urn:rm|none"] == []
    members = list(client.read_compartments([f"Patient/{i}" for i in ids], batch_size=10))
    assert len(members) == 25 and {m["resourceType"] for m in members} == {"Observation"}
    assert all(get_resource_accounts(m) == [o] for m in members)


def test_set_accounts_sync_async_and_wait(client: MedplumClient) -> None:
    o = _org(client)
    p = client.create_resource({"resourceType": "Patient"})
    obs = client.create_resource(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{p['id']}"},
        }
    )
    sync = client.set_accounts(f"Patient/{p['id']}", o)
    assert sync["parameter"] == [{"name": "resourcesUpdated", "valueInteger": 1}]
    # No difference: Medplum still walks (and counts) the compartment; nothing changes there.
    version = client.read_resource("Observation", obs["id"])["meta"]["versionId"]
    result = client.set_accounts(p, [o], propagate=True, prefer_async=True)
    job = client.wait_for_async_job(result, timeout=10)
    assert job["status"] == "completed" and job["output"]["parameter"][0]["valueInteger"] == 2
    assert client.read_resource("Observation", obs["id"])["meta"]["versionId"] == version
    o2 = _org(client)
    result = client.set_accounts(f"Patient/{p['id']}", [o, o2], propagate=True, prefer_async=True)
    status = client.get_async_job_status(result)
    assert status["resourceType"] == "AsyncJob"
    job = client.wait_for_async_job(result["content_location"], timeout=10)
    assert job["output"]["parameter"][0]["valueInteger"] == 2
    assert get_resource_accounts(client.read_resource("Observation", obs["id"])) == [o2]


def test_member_client_forbidden(sandbox: InProcessSandbox, client: MedplumClient) -> None:
    member = sandbox.client(MEMBER)
    p = client.create_resource({"resourceType": "Patient"})
    with pytest.raises(HTTPStatusError) as info:
        member.set_accounts(f"Patient/{p['id']}", ["Organization/x"])
    assert info.value.status == 403 and info.value.outcome_text == "Forbidden"
    result = member.set_accounts(
        f"Patient/{p['id']}", ["Organization/x"], propagate=True, prefer_async=True
    )
    with pytest.raises(JobError) as job_info:
        member.wait_for_async_job(result, timeout=10)
    assert job_info.value.status == "error" and job_info.value.outcome_text == "Forbidden"


def test_bad_credentials(sandbox: InProcessSandbox) -> None:
    bad = sandbox.client(("sandbox-admin", "wrong-secret-xyz"))
    with pytest.raises(AuthError) as info:
        bad.search("Patient")
    assert "wrong-secret-xyz" not in str(info.value) and "Invalid client" in str(info.value)


def test_operations_ccda_match_everything_terminology(client: MedplumClient) -> None:
    p = client.create_resource(
        {
            "resourceType": "Patient",
            "name": [{"family": "Ccda", "given": ["Cora"]}],
            "birthDate": "1970-01-02",
        }
    )
    client.create_resource(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "glucose"},
            "subject": {"reference": f"Patient/{p['id']}"},
        }
    )
    xml = client.export_ccda(p["id"])
    assert xml.startswith('<?xml version="1.0"') and "<ClinicalDocument" in xml
    assert "<family>Ccda</family>" in xml and "<td>glucose</td>" in xml
    import xml.etree.ElementTree as ET

    ET.fromstring(xml)  # well-formed
    everything = client.execute_operation(
        "Patient", "everything", resource_id=p["id"], method="GET"
    )
    assert [e["resource"]["resourceType"] for e in everything["entry"]] == [
        "Patient",
        "Observation",
    ]
    match: Any = client.execute_operation(
        "Patient",
        "match",
        params={
            "resource": {
                "resourceType": "Patient",
                "name": [{"family": "Ccda"}],
                "birthDate": "1970-01-02",
            }
        },
        wrap_params=True,
    )
    assert (
        match["entry"][0]["resource"]["id"] == p["id"]
        and match["entry"][0]["search"]["score"] == 1.0
    )
    vs = "http://hl7.org/fhir/ValueSet/observation-status"
    cs = "http://hl7.org/fhir/observation-status"
    assert client.validate_valueset_code(vs, {"system": cs, "code": "final"}) is True
    assert client.validate_valueset_code(vs, {"system": cs, "code": "bogus"}) is False
    expansion = client.expand_valueset(vs, filter="amend")
    assert expansion["expansion"]["contains"] == [
        {"system": cs, "code": "amended", "display": "Amended"}
    ]
    lookup = client.lookup_concept("final", cs)
    assert {"name": "display", "valueString": "Final"} in lookup["parameter"]
    # $translate needs a ConceptMap, like Medplum: one a user stores through the FHIR API.
    from reconciler.medplum.errors import HTTPStatusError
    from reconciler.sandbox.ops import CONCEPT_MAP_URL, observation_status_concept_map

    with pytest.raises(HTTPStatusError, match="No ConceptMap specified"):
        client.execute_operation(
            "ConceptMap", "translate", params={"code": "final", "system": cs}, method="GET"
        )
    stored = client.create_resource(observation_status_concept_map())
    local = "http://example.org/local-codes"
    for kwargs in (
        {"conceptmap_url": CONCEPT_MAP_URL},
        {"source": vs},
        {"conceptmap_id": stored["id"]},
    ):
        translated = client.translate_concept("final", cs, local, **kwargs)
        assert translated["parameter"][0] == {"name": "result", "valueBoolean": True}, kwargs
        assert translated["parameter"][1]["part"][1]["valueCoding"] == {
            "system": local,
            "code": "F",
        }
    # Parameters are read by their declared type: `url` as valueString is not seen.
    with pytest.raises(HTTPStatusError, match="No ValueSet specified"):
        client.execute_operation(
            "ValueSet",
            "validate-code",
            params={"url": vs, "coding": {"system": cs, "code": "final"}},
            wrap_params=True,
        )
    # An operation the server does not implement is "Not found", as on Medplum.
    with pytest.raises(HTTPStatusError) as info:
        client.execute_operation("Patient", "no-such-operation", params={})
    assert info.value.status == 404


def test_retries_against_sandbox_faults(make_sandbox: Any) -> None:
    sb = make_sandbox("--fault", "429:0.3", "--fault", "503:0.2", "--random-seed", "3")
    client = sb.client(max_retries=20)
    o = _org(client)
    for _ in range(10):
        client.create_resource({"resourceType": "Patient"}, accounts=[o])
    assert len(list(client.search_all("Patient", {"_compartment": o}, page_size=3))) == 10
    stats = sb.stats()
    assert stats["fault_429"] > 0 and stats["fault_503"] > 0


def test_accounts_command_prints_one_reference_per_line(
    sandbox: InProcessSandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.cli import main

    client = sandbox.client()
    o1, o2 = _org(client), _org(client)
    p = client.create_resource(
        {
            "resourceType": "Patient",
            "meta": {"accounts": [{"reference": o1}], "account": {"reference": o2}},
        }
    )
    monkeypatch.setenv("MEDPLUM_BASE_URL", sandbox.url)
    monkeypatch.setenv("MEDPLUM_CLIENT_ID", "sandbox-admin")
    monkeypatch.setenv("MEDPLUM_CLIENT_SECRET", "sandbox-secret")
    capsys.readouterr()
    assert main(["accounts", f"Patient/{p['id']}", "-q"]) == 0
    assert capsys.readouterr().out == f"{o1}\n{o2}\n"  # meta.accounts, then legacy meta.account
    assert main(["accounts", "not-a-reference", "-q"]) == 1
    assert "expected a reference Type/id" in capsys.readouterr().err
