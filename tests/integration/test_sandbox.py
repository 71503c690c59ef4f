"""The sandbox over HTTP: Medplum's status codes, headers and body shapes (medplum-api.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.sandbox_process import MEMBER, InProcessSandbox, SandboxProcess

# The recorded real Medplum 5.0.10 exchanges live in ../shared beside the checkout.
EXCHANGES_FILE = Path(__file__).resolve().parents[3] / "shared" / "medplum-5.0.10-exchanges.json"
EXCHANGES = json.loads(EXCHANGES_FILE.read_text()) if EXCHANGES_FILE.exists() else []


class Api:
    """Raw HTTP against the sandbox with a bearer token (shapes are what we test here)."""

    def __init__(
        self, sb: InProcessSandbox, creds: tuple[str, str] | None = None, extended: bool = True
    ):
        self.sb = sb
        self.http = httpx.Client(base_url=f"{sb.url}/fhir/R4/", timeout=10)
        token = sb.token(creds) if creds else sb.token()
        self.headers = {"Authorization": f"Bearer {token}"}
        if extended:
            self.headers["X-Medplum"] = "extended"

    def req(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return self.http.request(method, path, headers=headers, **kw)

    def create(self, resource: dict[str, Any], **kw: Any) -> dict[str, Any]:
        r = self.req("POST", resource["resourceType"], json=resource, **kw)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def read(self, ref: str) -> dict[str, Any]:
        r = self.req("GET", ref)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def set_accounts(
        self, ref: str, accounts: list[str], propagate: bool = False, **kw: Any
    ) -> httpx.Response:
        params: list[dict[str, Any]] = [
            {"name": "accounts", "valueReference": {"reference": a}} for a in accounts
        ]
        if propagate:
            params.append({"name": "propagate", "valueBoolean": True})
        return self.req(
            "POST",
            f"{ref}/$set-accounts",
            json={"resourceType": "Parameters", "parameter": params},
            **kw,
        )


def accounts(resource: dict[str, Any]) -> list[str]:
    return [a["reference"] for a in resource.get("meta", {}).get("accounts", [])]


def wait_job(api: Api, url: str, timeout: float = 10) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.http.get(url, headers=api.headers)
        if r.status_code == 200:
            return r
        assert r.status_code == 202
        assert r.json()["status"] == "accepted"
        time.sleep(0.02)
    raise AssertionError("job did not finish")


@pytest.fixture
def api(sandbox: InProcessSandbox) -> Api:
    return Api(sandbox)


def org(api: Api, name: str = "Org") -> str:
    return "Organization/" + api.create({"resourceType": "Organization", "name": name})["id"]


# --- basics and auth --------------------------------------------------------------------------


def test_healthcheck_and_ratelimit_headers(sandbox: InProcessSandbox, api: Api) -> None:
    health = httpx.get(f"{sandbox.url}/healthcheck")
    assert health.status_code == 200
    assert (
        health.headers["RateLimit"].startswith('"requests";r=')
        and "fhirInteractions" not in health.headers["RateLimit"]
    )
    r = api.req("GET", "Organization", params={"_count": "1"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/fhir+json; charset=utf-8"
    parts = [p.strip() for p in r.headers["RateLimit"].split(",")]
    assert parts[0].startswith('"requests";r=') and parts[1].startswith('"fhirInteractions";r=')


def test_token_errors(sandbox: InProcessSandbox) -> None:
    url = f"{sandbox.url}/oauth2/token"
    r = httpx.post(url, data={"grant_type": "password"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = httpx.post(url, data={"grant_type": "client_credentials", "client_id": "sandbox-admin"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = httpx.post(
        url,
        data={
            "grant_type": "client_credentials",
            "client_id": "sandbox-admin",
            "client_secret": "nope",
        },
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = httpx.get(f"{sandbox.url}/fhir/R4/Patient")
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    r = httpx.get(f"{sandbox.url}/fhir/R4/Patient", headers={"Authorization": "Bearer made-up"})
    assert r.status_code == 401


def test_token_expiry(make_app_sandbox: Any) -> None:
    sb = make_app_sandbox("--token-ttl", "60")
    http = httpx.Client(base_url=f"{sb.url}/fhir/R4/", transport=sb.transport)
    headers = {"Authorization": f"Bearer {sb.token()}"}
    assert http.get("Patient", headers=headers).status_code == 200
    sb.clock.advance(59)
    assert http.get("Patient", headers=headers).status_code == 200
    sb.clock.advance(2)
    assert http.get("Patient", headers=headers).status_code == 401


# --- CRUD, versions, conditional requests -----------------------------------------------------


def test_create_read_update_delete_versions(api: Api) -> None:
    r = api.req("POST", "Patient", json={"resourceType": "Patient", "name": [{"family": "Crud"}]})
    assert r.status_code == 201
    created = r.json()
    pid, v1 = created["id"], created["meta"]["versionId"]
    assert len(pid) == 36 and r.headers["ETag"] == f'W/"{v1}"'
    assert r.headers["Location"].endswith(f"/fhir/R4/Patient/{pid}")
    assert created["meta"]["lastUpdated"].endswith("Z")
    created["birthDate"] = "2000-01-01"
    r = api.req("PUT", f"Patient/{pid}", json=created)
    assert r.status_code == 200
    v2 = r.json()["meta"]["versionId"]
    assert v2 != v1 and api.read(f"Patient/{pid}")["birthDate"] == "2000-01-01"
    # If-Match on the old version: 412; on the current one: 200.
    stale = api.req("PUT", f"Patient/{pid}", json=created, headers={"If-Match": f'W/"{v1}"'})
    assert stale.status_code == 412 and stale.json()["resourceType"] == "OperationOutcome"
    assert (
        api.req(
            "PUT", f"Patient/{pid}", json=created, headers={"If-Match": f'W/"{v2}"'}
        ).status_code
        == 200
    )
    assert api.req("DELETE", f"Patient/{pid}").status_code == 200
    r = api.req("GET", f"Patient/{pid}")
    assert r.status_code == 404
    assert r.json()["issue"][0] == {
        "severity": "error",
        "code": "not-found",
        "details": {"text": "Not found"},
    }


def test_bad_requests(api: Api) -> None:
    r = api.req(
        "POST", "Patient", content=b"{nope", headers={"Content-Type": "application/fhir+json"}
    )
    assert r.status_code == 400 and r.json()["issue"][0]["details"]["text"] == "Invalid JSON body"
    r = api.req("POST", "Patient", json={"resourceType": "Observation"})
    assert (
        r.status_code == 400
        and r.json()["issue"][0]["details"]["text"] == "Incorrect resource type"
    )
    assert api.req("PATCH", "Patient").status_code == 405


def test_conditional_create(api: Api) -> None:
    body = {
        "resourceType": "Basic",
        "identifier": [{"system": "urn:test", "value": "cond-1"}],
        "code": {"text": "x"},
    }
    first = api.req(
        "POST", "Basic", json=body, headers={"If-None-Exist": "identifier=urn:test|cond-1"}
    )
    again = api.req(
        "POST", "Basic", json=body, headers={"If-None-Exist": "identifier=urn:test|cond-1"}
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]


# --- accounts rules ---------------------------------------------------------------------------


def test_extended_header_shows_account_and_compartment(sandbox: InProcessSandbox, api: Api) -> None:
    o = org(api)
    p = api.create({"resourceType": "Patient", "meta": {"accounts": [{"reference": o}]}})
    assert p["meta"]["account"] == {"reference": o}
    compartment = [c["reference"] for c in p["meta"]["compartment"]]
    assert compartment[1:] == [o, f"Patient/{p['id']}"] and compartment[0].startswith("Project/")
    plain = Api(sandbox, extended=False).read(f"Patient/{p['id']}")
    assert (
        accounts(plain) == [o]
        and "account" not in plain["meta"]
        and "compartment" not in plain["meta"]
    )


def test_linked_resources_inherit_and_rederive_accounts(
    sandbox: InProcessSandbox, api: Api
) -> None:
    o1, o2 = org(api), org(api)
    p = api.create({"resourceType": "Patient", "meta": {"accounts": [{"reference": o1}]}})
    obs = api.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{p['id']}"},
        }
    )
    assert accounts(obs) == [o1]
    # The patient moves (no propagate); updating the Observation re-derives from the Patient.
    assert api.set_accounts(f"Patient/{p['id']}", [o2]).status_code == 200
    assert accounts(api.read(f"Observation/{obs['id']}")) == [o1]
    member = Api(sandbox, MEMBER)
    obs_body = api.read(f"Observation/{obs['id']}")
    obs_body["meta"] = {"accounts": [{"reference": o1}]}  # a member's accounts are ignored
    r = member.req("PUT", f"Observation/{obs['id']}", json=obs_body)
    assert r.status_code == 200 and accounts(r.json()) == [o2]
    # A Patient update keeps its accounts unless an admin sends meta.accounts.
    patient = api.read(f"Patient/{p['id']}")
    patient["meta"] = {}
    assert accounts(member.req("PUT", f"Patient/{p['id']}", json=patient).json()) == [o2]
    patient["meta"] = {"accounts": [{"reference": o1}]}
    assert accounts(api.req("PUT", f"Patient/{p['id']}", json=patient).json()) == [o1]


# --- search ----------------------------------------------------------------------------------


def test_search_features(api: Api) -> None:
    o = org(api)
    ids = []
    for i in range(5):
        p = api.create(
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:mrn", "value": f"S-{i}"}],
                "name": [{"family": "Searchable", "given": [f"G{i}"]}],
                "birthDate": "1999-09-09",
                "meta": {"accounts": [{"reference": o}]},
            }
        )
        ids.append(p["id"])
    r = api.req("GET", "Patient", params={"_compartment": o, "_count": "2"})
    bundle = r.json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == ids[:2]
    assert "total" not in bundle
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert set(links) == {"self", "first", "next"}
    assert (
        links["next"]
        == f"{api.sb.url}/fhir/R4/Patient?_compartment={o.replace('/', '%2F')}&_count=2&_offset=2"
    )
    page2 = api.http.get(links["next"], headers=api.headers).json()
    assert [e["resource"]["id"] for e in page2["entry"]] == ids[2:4]
    assert {link["relation"] for link in page2["link"]} == {"self", "first", "next", "previous"}
    total = api.req(
        "GET", "Patient", params={"_compartment": o, "_count": "0", "_total": "accurate"}
    ).json()
    assert total["total"] == 5 and "entry" not in total
    assert (
        api.req("GET", "Patient", params={"_compartment": o, "_summary": "count"}).json()["total"]
        == 5
    )
    r = api.req(
        "GET",
        "Patient",
        params={"identifier": "urn:mrn|S-0,urn:mrn|S-3", "_elements": "identifier"},
    )
    found = r.json()["entry"]
    assert [e["resource"]["id"] for e in found] == [ids[0], ids[3]]
    assert (
        "name" not in found[0]["resource"]
        and found[0]["resource"]["meta"]["tag"][0]["code"] == "SUBSETTED"
    )
    assert accounts(found[0]["resource"]) == [o]
    r = api.req("POST", "Patient/_search", data={"_id": ",".join(ids[1:4]), "_count": "1000"})
    assert [e["resource"]["id"] for e in r.json()["entry"]] == ids[1:4]
    assert (
        len(
            api.req(
                "GET", "Patient", params={"name": "searchab", "birthdate": "1999-09-09"}
            ).json()["entry"]
        )
        == 5
    )
    r = api.req("GET", "Patient", params={"_account": o})
    assert (
        r.status_code == 400
        and r.json()["issue"][0]["details"]["text"] == "Unknown search parameter: _account"
    )
    r = api.req("GET", "Patient", params={"_compartment": o, "_count": "5000"})
    assert len(r.json()["entry"]) == 5 and "_count=1000" in r.json()["link"][0]["url"]


def test_cursor_paging_with_sort_last_updated(api: Api) -> None:
    o = org(api)
    ids = [
        api.create({"resourceType": "Patient", "meta": {"accounts": [{"reference": o}]}})["id"]
        for _ in range(45)
    ]
    seen: list[str] = []
    bundle = api.req(
        "GET", "Patient", params={"_compartment": o, "_count": "20", "_sort": "_lastUpdated"}
    ).json()
    while True:
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            break
        assert "_cursor=" in nxt[0] and "_offset" not in nxt[0]
        bundle = api.http.get(nxt[0], headers=api.headers).json()
    assert seen == ids


def test_max_search_offset(make_sandbox: Any) -> None:
    api = Api(make_sandbox("--max-search-offset", "10"))
    assert api.req("GET", "Patient", params={"_offset": "10"}).status_code == 200
    r = api.req("GET", "Patient", params={"_offset": "11"})
    assert (
        r.status_code == 400
        and "Search offset exceeds maximum" in r.json()["issue"][0]["details"]["text"]
    )


def test_system_level_compartment_search(api: Api) -> None:
    a = api.create({"resourceType": "Patient"})["id"]
    b = api.create({"resourceType": "Patient"})["id"]
    obs = api.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{a}"},
        }
    )
    enc = api.create(
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{b}"},
        }
    )
    api.create({"resourceType": "Observation", "status": "final", "code": {"text": "y"}})
    r = api.req(
        "GET",
        "",
        params={"_type": "Observation,Encounter", "_compartment": f"Patient/{a},Patient/{b}"},
    )
    assert sorted(e["resource"]["id"] for e in r.json()["entry"]) == sorted([obs["id"], enc["id"]])
    r = api.req("GET", "", params={"_compartment": f"Patient/{a}"})
    assert r.status_code == 400 and r.json()["issue"][0]["details"]["text"] == "No types specified"


def test_batch_bundle(api: Api) -> None:
    p = api.create({"resourceType": "Patient"})
    r = api.req(
        "POST",
        "",
        json={
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"request": {"method": "GET", "url": f"Patient/{p['id']}"}},
                {
                    "request": {
                        "method": "GET",
                        "url": "Patient/00000000-0000-4000-8000-000000000000",
                    }
                },
                {
                    "request": {"method": "POST", "url": "Organization"},
                    "resource": {"resourceType": "Organization", "name": "B"},
                },
            ],
        },
    )
    body = r.json()
    assert r.status_code == 200 and body["type"] == "batch-response"
    assert [e["response"]["status"] for e in body["entry"]] == ["200", "404", "201"]
    assert body["entry"][0]["resource"]["id"] == p["id"]
    assert body["entry"][1]["response"]["outcome"]["id"] == "not-found"


# --- $set-accounts ---------------------------------------------------------------------------


def _patient_with_compartment(api: Api, accounts_: list[str], n: int) -> tuple[str, list[str]]:
    p = api.create(
        {"resourceType": "Patient", "meta": {"accounts": [{"reference": a} for a in accounts_]}}
    )
    members = []
    for i in range(n):
        kind = "Observation" if i % 2 == 0 else "Encounter"
        body: dict[str, Any] = {
            "resourceType": kind,
            "status": "final" if kind == "Observation" else "finished",
            "subject": {"reference": f"Patient/{p['id']}"},
        }
        body["code" if kind == "Observation" else "class"] = (
            {"text": "x"} if kind == "Observation" else {"code": "AMB"}
        )
        members.append(f"{kind}/{api.create(body)['id']}")
    return f"Patient/{p['id']}", members


def test_set_accounts_replace_and_propagate_difference_only(api: Api) -> None:
    keep, drop, add = org(api), org(api), org(api)
    patient, members = _patient_with_compartment(api, [keep, drop], 3)
    other = org(api)
    # A compartment resource with an extra account keeps it; only the difference propagates.
    obs = api.read(members[0])
    obs["meta"] = {"accounts": [{"reference": other}, {"reference": keep}, {"reference": drop}]}
    api.req("PUT", members[0], json=obs)
    r = api.set_accounts(patient, [keep, add], propagate=True)
    assert r.status_code == 200
    assert r.json() == {
        "resourceType": "Parameters",
        "parameter": [{"name": "resourcesUpdated", "valueInteger": 4}],
    }
    assert accounts(api.read(patient)) == [keep, add]
    assert api.read(patient)["meta"]["account"] == {"reference": keep}
    assert accounts(api.read(members[0])) == [other, keep, add]
    assert all(accounts(api.read(m)) == [keep, add] for m in members[1:])
    updated = api.read(members[1])
    assert updated["meta"]["author"] == {"reference": "system"}
    # Without propagate, the compartment is untouched; an empty Parameters clears the target.
    assert api.set_accounts(patient, [add]).json()["parameter"][0]["valueInteger"] == 1
    assert accounts(api.read(members[1])) == [keep, add]
    r = api.req("POST", f"{patient}/$set-accounts", json={"resourceType": "Parameters"})
    assert r.status_code == 200 and accounts(api.read(patient)) == []


def test_set_accounts_propagate_cap(make_sandbox: Any) -> None:
    api = Api(make_sandbox("--propagate-cap", "5"))
    o = org(api)
    patient, members = _patient_with_compartment(api, [], 12)
    r = api.set_accounts(patient, [o], propagate=True)
    assert r.json()["parameter"][0]["valueInteger"] == 6
    assert [accounts(api.read(m)) for m in members] == [[o]] * 5 + [[]] * 7


def test_set_accounts_member_forbidden_sync_and_async(sandbox: InProcessSandbox, api: Api) -> None:
    o = org(api)
    patient, _ = _patient_with_compartment(api, [], 0)
    member = Api(sandbox, MEMBER)
    r = member.set_accounts(patient, [o])
    assert r.status_code == 403
    assert r.json()["id"] == "forbidden" and r.json()["issue"][0]["details"]["text"] == "Forbidden"
    r = member.set_accounts(patient, [o], propagate=True, headers={"Prefer": "respond-async"})
    assert r.status_code == 202
    job = wait_job(member, r.headers["Content-Location"]).json()
    assert job["status"] == "error"
    assert job["output"]["parameter"][0]["name"] == "outcome"
    assert job["output"]["parameter"][0]["resource"]["issue"][0]["code"] == "forbidden"
    assert accounts(api.read(patient)) == []
    r = api.set_accounts("Patient/00000000-0000-4000-8000-000000000000", [o])
    assert r.status_code == 404


def test_async_set_accounts_job_lifecycle(sandbox: InProcessSandbox, api: Api) -> None:
    o = org(api)
    patient, members = _patient_with_compartment(api, [], 2)
    r = api.set_accounts(patient, [o], propagate=True, headers={"Prefer": "respond-async"})
    assert r.status_code == 202
    body = r.json()
    url = r.headers["Content-Location"]
    assert url.startswith(f"{sandbox.url}/fhir/R4/job/") and url.endswith("/status")
    assert body["id"] == "accepted" and body["issue"][0]["diagnostics"] == url
    assert (
        body["issue"][0]["severity"] == "information"
        and body["issue"][0]["code"] == "informational"
    )
    done = wait_job(api, url).json()
    assert done["resourceType"] == "AsyncJob" and done["status"] == "completed"
    assert done["request"] == f"{sandbox.url}/{patient}/$set-accounts"
    assert done["output"]["parameter"] == [{"name": "resourcesUpdated", "valueInteger": 3}]
    assert "transactionTime" in done
    job_id = url.split("/job/")[1].split("/")[0]
    assert api.read(f"AsyncJob/{job_id}")["status"] == "completed"
    assert all(accounts(api.read(m)) == [o] for m in members)
    # Finished jobs cannot be cancelled; unknown jobs are 404.
    assert api.http.delete(url, headers=api.headers).status_code == 400
    assert api.req("GET", "job/00000000-0000-4000-8000-000000000000/status").status_code == 404
    # Without propagate, respond-async is ignored (Medplum 5.x): a synchronous 200.
    assert api.set_accounts(patient, [o], headers={"Prefer": "respond-async"}).status_code == 200


def test_job_delay_cancel_and_fail_rate(make_sandbox: Any) -> None:
    api = Api(make_sandbox("--job-delay-ms", "400"))
    o = org(api)
    patient, _ = _patient_with_compartment(api, [], 0)
    r = api.set_accounts(patient, [o], propagate=True, headers={"Prefer": "respond-async"})
    url = r.headers["Content-Location"]
    assert api.http.get(url, headers=api.headers).status_code == 202
    assert api.http.delete(url, headers=api.headers).status_code == 202
    assert wait_job(api, url).json()["status"] == "cancelled"
    time.sleep(0.5)
    assert accounts(api.read(patient)) == []
    failing = Api(make_sandbox("--job-fail-rate", "1"))
    o = org(failing)
    patient, _ = _patient_with_compartment(failing, [], 0)
    r = failing.set_accounts(patient, [o], propagate=True, headers={"Prefer": "respond-async"})
    job = wait_job(failing, r.headers["Content-Location"]).json()
    assert job["status"] == "error"
    assert (
        "injected job failure"
        in job["output"]["parameter"][0]["resource"]["issue"][0]["details"]["text"]
    )


# --- fault injection and latency -------------------------------------------------------------


def test_fault_429_like_medplum_without_retry_after(make_sandbox: Any) -> None:
    api = Api(make_sandbox("--fault", "429:1"))
    r = api.req("GET", "Patient")
    assert r.status_code == 429 and "Retry-After" not in r.headers
    body = r.json()
    assert body["id"] == "too-many-requests" and body["issue"][0]["code"] == "throttled"
    assert "_msBeforeNext" in json.loads(body["issue"][0]["diagnostics"])
    # Token requests are not faulted.
    assert api.sb.token()


def test_fault_with_retry_after_and_shorthand(make_sandbox: Any) -> None:
    api = Api(make_sandbox("--fault-rate", "1", "--fault-status", "503", "--retry-after", "0.25"))
    r = api.req("GET", "Patient")
    assert r.status_code == 503 and r.headers["Retry-After"] == "0.25"
    mixed = Api(make_sandbox("--fault", "429:0.5", "--fault", "503:0.5", "--random-seed", "7"))
    codes = {mixed.req("GET", "Patient").status_code for _ in range(30)}
    assert codes == {429, 503}
    assert mixed.sb.stats()["fault_429"] + mixed.sb.stats()["fault_503"] == 30


def test_latency(make_sandbox: Any) -> None:
    api = Api(make_sandbox("--latency-ms", "150"))
    started = time.monotonic()
    api.req("GET", "Patient")
    assert time.monotonic() - started >= 0.15


def test_sigterm_keeps_committed_data(tmp_path: Path) -> None:
    data = str(tmp_path / "s.sqlite")
    first = SandboxProcess(data=data).start()
    api = Api(first)
    pid = api.create({"resourceType": "Patient", "name": [{"family": "Durable"}]})["id"]
    assert first.stop() == 0
    second = SandboxProcess(data=data).start()
    try:
        assert Api(second).read(f"Patient/{pid}")["name"] == [{"family": "Durable"}]
    finally:
        second.stop()


@pytest.mark.skipif(not EXCHANGES, reason="../shared/medplum-5.0.10-exchanges.json not present")
def test_error_bodies_match_recorded_medplum_shapes(api: Api) -> None:
    """Compare our OperationOutcomes with the recorded real ones (ignoring Medplum's tracing)."""
    recorded = {e["title"]: e["response"] for e in EXCHANGES}
    real_404 = recorded["read a missing resource -> 404"]["body"]
    ours = api.req("GET", "Patient/00000000-0000-4000-8000-000000000000").json()
    assert {k: v for k, v in real_404.items() if k != "extension"} == ours
    real_400 = recorded["unknown search parameter _account -> 400"]["body"]
    ours = api.req("GET", "Patient", params={"_account": "Organization/x"}).json()
    assert {k: v for k, v in real_400.items() if k != "extension"} == ours
    real_403 = recorded["non-admin $set-accounts synchronous -> 403"]["body"]
    member = Api(api.sb, MEMBER)
    p = api.create({"resourceType": "Patient"})
    ours = member.set_accounts(f"Patient/{p['id']}", ["Organization/x"]).json()
    assert {k: v for k, v in real_403.items() if k != "extension"} == ours


def test_client_flag_replaces_default_clients(make_sandbox: Any) -> None:
    sb = make_sandbox("--client", "ci:ci-secret:admin", "--client", "viewer:v-secret:member")
    url = f"{sb.url}/oauth2/token"
    form = {"grant_type": "client_credentials"}
    assert (
        httpx.post(url, data={**form, "client_id": "ci", "client_secret": "ci-secret"}).status_code
        == 200
    )
    assert (
        httpx.post(
            url, data={**form, "client_id": "viewer", "client_secret": "v-secret"}
        ).status_code
        == 200
    )
    r = httpx.post(
        url, data={**form, "client_id": "sandbox-admin", "client_secret": "sandbox-secret"}
    )
    assert r.status_code == 401
    viewer = Api(sb, ("viewer", "v-secret"))
    p = Api(sb, ("ci", "ci-secret")).create({"resourceType": "Patient"})
    assert viewer.set_accounts(f"Patient/{p['id']}", ["Organization/x"]).status_code == 403


def test_fault_jobs_flag_faults_job_polls_too(make_sandbox: Any) -> None:
    quiet = Api(make_sandbox("--fault", "503:1"))
    assert quiet.req("GET", "job/00000000-0000-4000-8000-000000000000/status").status_code == 404
    loud = Api(make_sandbox("--fault", "503:1", "--fault-jobs"))
    assert loud.req("GET", "job/00000000-0000-4000-8000-000000000000/status").status_code == 503


def test_search_features_the_sandbox_lacks_are_refused_not_silently_empty(api: Api) -> None:
    r = api.req("GET", "Patient", params={"birthdate": "lt1965-01-01"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["details"]["text"] == (
        "Unsupported search prefix for parameter: birthdate"
    )
    assert api.req("GET", "Patient", params={"birthdate": "1965-01-01"}).status_code == 200
    r = api.req("GET", "Patient", params={"address-city": "Oslo"})
    assert r.status_code == 400 and "address-city" in r.json()["issue"][0]["details"]["text"]


def test_stopping_the_sandbox_mid_request_prints_no_traceback() -> None:
    import threading

    proc = SandboxProcess(args=["--latency-ms", "300"]).start()
    api = Api(proc)
    results: list[int] = []

    def busy() -> None:
        try:
            results.append(api.req("GET", "Patient").status_code)
        except httpx.HTTPError:
            results.append(-1)

    threads = [threading.Thread(target=busy) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)  # the requests are inside the server now
    assert proc.stop() == 0
    for t in threads:
        t.join(timeout=10)
    assert proc.proc is not None and proc.proc.stderr is not None
    err = proc.proc.stderr.read()
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "Sandbox stopped."


def test_a_request_cut_short_is_never_handled(sandbox: InProcessSandbox, api: Api) -> None:
    # A client killed while sending: the headers arrive, the body does not. Medplum's body
    # parser answers "request aborted" and handles nothing; a sandbox that read the missing
    # body as empty ran $set-accounts with no accounts and cleared the patient's (found by
    # tests/reliability/test_crash.py: kill -9 mid-apply left a patient with no account).
    import socket
    from urllib.parse import urlsplit

    tenant = org(api)
    patient = api.create({"resourceType": "Patient", "meta": {"accounts": [{"reference": tenant}]}})
    ref = f"Patient/{patient['id']}"
    host, port = urlsplit(sandbox.url).hostname, urlsplit(sandbox.url).port
    body = json.dumps({"resourceType": "Parameters", "parameter": []}).encode()
    head = (
        f"POST /fhir/R4/{ref}/$set-accounts HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {sandbox.token()}\r\nContent-Type: application/fhir+json\r\n"
        f"Content-Length: {len(body) + 100}\r\n\r\n"
    ).encode()
    for sent in (head, head + body[:10], head + body):  # no body, a partial one, one too short
        with socket.create_connection((str(host), int(port or 80))) as conn:
            conn.sendall(sent)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(5)
            assert conn.recv(4096) == b""  # no answer: the connection is dropped
    assert accounts(api.read(ref)) == [tenant]


def test_instance_history_like_medplum(make_sandbox: Any) -> None:
    """Newest first, the caller's $set-accounts version authored by the caller, a deletion as a
    410 entry, vread, 10 quota points (fhirquota.ts HISTORY), and in a batch Bundle too."""
    sandbox = make_sandbox("--fhir-quota", "100000")
    api = Api(sandbox)
    a, b = org(api, "A"), org(api, "B")
    pid = api.create({"resourceType": "Patient", "meta": {"accounts": [{"reference": a}]}})["id"]
    assert api.set_accounts(f"Patient/{pid}", [a, b]).status_code == 200
    r = api.req("GET", f"Patient/{pid}/_history")
    assert r.status_code == 200 and r.json()["type"] == "history"
    entries = r.json()["entry"]
    assert [accounts(e["resource"]) for e in entries] == [[a, b], [a]]
    assert (
        entries[0]["resource"]["meta"]["author"]["reference"] == "ClientApplication/sandbox-admin"
    )
    newest = entries[0]["resource"]["meta"]["versionId"]
    assert entries[0]["request"] == {"method": "GET", "url": f"Patient/{pid}/_history/{newest}"}
    before = fhir_points(api.req("GET", f"Patient/{pid}"))
    after = fhir_points(api.req("GET", f"Patient/{pid}/_history"))
    assert before - after == 10
    old = entries[1]["resource"]["meta"]["versionId"]
    assert accounts(api.read(f"Patient/{pid}/_history/{old}")) == [a]
    batch = api.req("POST", "", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{pid}/_history"}}]})  # fmt: skip
    assert len(batch.json()["entry"][0]["resource"]["entry"]) == 2
    assert api.req("DELETE", f"Patient/{pid}").status_code == 200
    gone = api.req("GET", f"Patient/{pid}/_history").json()["entry"]
    assert [e["response"]["status"] for e in gone] == ["410", "200", "200"]
    assert (
        api.req("GET", "Patient/00000000-0000-4000-8000-000000000000/_history").status_code == 404
    )
    assert api.req("POST", f"Patient/{pid}/_history").status_code == 405


def fhir_points(response: httpx.Response) -> int:
    header = response.headers["RateLimit"]
    part = next(p for p in header.split(",") if "fhirInteractions" in p)
    return int(part.split(";r=")[1].split(";")[0])
