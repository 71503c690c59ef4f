"""The bearer token goes only to the configured server's origin, whatever URLs the server's
answers point at (issue: hardening, point 3), and a `next` link seen twice ends the scan."""

from __future__ import annotations

import httpx
import pytest

from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import TransportError

BASE = "https://medplum.example/"
SECRET = "s3cr3t-never-elsewhere"


def client_for(handler: object) -> tuple[MedplumClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)  # type: ignore[operator, no-any-return]

    http = httpx.Client(transport=httpx.MockTransport(record))
    return MedplumClient(BASE, "c", SECRET, http=http, sleep=lambda s: None), seen


def token(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"access_token": "tok-123", "expires_in": 3600})


def test_next_links_to_another_host_are_followed_on_the_configured_origin() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            return token(request)
        page = request.url.params.get("page", "1")
        body: dict[str, object] = {
            "resourceType": "Bundle",
            "entry": [{"resource": {"resourceType": "Patient", "id": f"p{page}"}}],
        }
        if page == "1":
            body["link"] = [{"relation": "next",
                             "url": "http://evil.example:9999/fhir/R4/Patient?page=2"}]  # fmt: skip
        return httpx.Response(200, json=body)

    client, seen = client_for(handler)
    assert [p["id"] for p in client.search_all("Patient", {})] == ["p1", "p2"]
    assert {r.url.host for r in seen} == {"medplum.example"}
    assert str(seen[-1].url) == "https://medplum.example/fhir/R4/Patient?page=2"
    assert all(r.headers.get("Authorization") in (None, "Bearer tok-123") for r in seen)


def test_a_next_link_to_itself_ends_with_an_error_not_a_loop() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            return token(request)
        return httpx.Response(
            200,
            json={"resourceType": "Bundle",
                  "link": [{"relation": "next", "url": f"{BASE}fhir/R4/Patient?again=1"}]},
        )  # fmt: skip

    client, seen = client_for(handler)
    with pytest.raises(TransportError, match="next link repeats a page already read"):
        list(client.search_all("Patient", {}))
    assert len(seen) == 3  # the token, the first page, the linked page once, and no more


def test_job_urls_on_another_origin_are_polled_on_the_configured_one() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            return token(request)
        if request.url.path.endswith("$set-accounts"):
            url = "http://localhost:8103/fhir/R4/job/j1/status"
            return httpx.Response(
                202,
                headers={"Content-Location": url},
                json={"resourceType": "OperationOutcome", "id": "accepted",
                      "issue": [{"severity": "information", "code": "informational",
                                 "details": {"text": "Accepted"}, "diagnostics": url}]},
            )  # fmt: skip
        return httpx.Response(200, json={"resourceType": "AsyncJob", "id": "j1",
                                         "status": "completed"})  # fmt: skip

    client, seen = client_for(handler)
    result = client.set_accounts("Patient/p1", ["Organization/o"], propagate=True,
                                 prefer_async=True)  # fmt: skip
    assert client.wait_for_async_job(result, timeout=5)["status"] == "completed"
    assert {r.url.host for r in seen} == {"medplum.example"}
    assert seen[-1].url.path == "/fhir/R4/job/j1/status"
