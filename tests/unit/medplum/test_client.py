"""MedplumClient against httpx.MockTransport: auth, retries, paging, parameters, pacing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import (
    AuthError,
    HTTPStatusError,
    JobError,
    JobTimeout,
    TransportError,
)
from reconciler.medplum.operations import wrap_parameters

BASE = "https://medplum.example/"
SECRET = "s3cr3t-value-never-shown"


class Server:
    """A scripted server: answers from a queue per path; records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.tokens = 0
        self.routes: dict[
            str, list[httpx.Response | Callable[[httpx.Request], httpx.Response]]
        ] = {}

    def add(
        self, path: str, *responses: httpx.Response | Callable[[httpx.Request], httpx.Response]
    ) -> None:
        self.routes.setdefault(path, []).extend(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/oauth2/token":
            self.tokens += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"tok-{self.tokens}",
                    "token_type": "Bearer",
                    "expires_in": 3600,
                },
            )
        queue = self.routes.get(request.url.path)
        if not queue:
            return httpx.Response(
                404,
                json={
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {"severity": "error", "code": "not-found", "details": {"text": "Not found"}}
                    ],
                },
            )
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return answer(request) if callable(answer) else answer

    def fhir(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/oauth2/token"]


def make(server: Server, **kwargs: Any) -> tuple[MedplumClient, list[float]]:
    sleeps: list[float] = []
    client = MedplumClient(
        BASE,
        "client-1",
        SECRET,
        http=httpx.Client(transport=httpx.MockTransport(server)),
        sleep=sleeps.append,
        **kwargs,
    )
    return client, sleeps


def outcome(code: str, text: str, diagnostics: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "details": {"text": text}}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


PATIENT = {"resourceType": "Patient", "id": "p1", "meta": {"versionId": "v1"}}


def test_auth_headers_and_token_reuse() -> None:
    server = Server()
    server.add("/fhir/R4/Patient/p1", httpx.Response(200, json=PATIENT))
    client, _ = make(server)
    assert client.read_resource("Patient", "p1") == PATIENT
    assert client.read_resource("Patient", "p1") == PATIENT
    assert server.tokens == 1
    token_req = server.requests[0]
    assert dict(httpx.QueryParams(token_req.content.decode())) == {
        "grant_type": "client_credentials",
        "client_id": "client-1",
        "client_secret": SECRET,
    }
    for r in server.fhir():
        assert r.headers["Authorization"] == "Bearer tok-1"
        assert r.headers["X-Medplum"] == "extended"


def test_401_refreshes_token_once_then_fails() -> None:
    server = Server()
    server.add(
        "/fhir/R4/Patient/p1",
        httpx.Response(401, json=outcome("login", "Unauthorized")),
        httpx.Response(200, json=PATIENT),
    )
    client, _ = make(server)
    assert client.read_resource("Patient", "p1")["id"] == "p1"
    assert server.tokens == 2
    assert server.fhir()[-1].headers["Authorization"] == "Bearer tok-2"
    always = Server()
    always.add("/fhir/R4/Patient/p1", httpx.Response(401, json=outcome("login", "Unauthorized")))
    client, _ = make(always)
    with pytest.raises(AuthError) as info:
        client.read_resource("Patient", "p1")
    assert always.tokens == 2 and len(always.fhir()) == 2
    assert "tok-" not in str(info.value) and SECRET not in str(info.value)


def test_bad_credentials_error_names_client_not_secret() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401, json={"error": "invalid_client", "error_description": "Invalid client"}
        )

    client = MedplumClient(
        BASE, "client-1", SECRET, http=httpx.Client(transport=httpx.MockTransport(handler))
    )
    with pytest.raises(AuthError) as info:
        client.read_resource("Patient", "p1")
    assert str(info.value) == (
        "POST https://medplum.example/oauth2/token answered 401: client credentials for "
        "'client-1' were refused: Invalid client"
    )


def test_429_honours_retry_after() -> None:
    server = Server()
    server.add(
        "/fhir/R4/Patient/p1",
        httpx.Response(
            429, headers={"Retry-After": "0.01"}, json=outcome("throttled", "Too Many Requests")
        ),
        httpx.Response(200, json=PATIENT),
    )
    client, sleeps = make(server)
    assert client.read_resource("Patient", "p1")["id"] == "p1"
    assert len(server.fhir()) == 2
    assert 0.01 <= sleeps[0] <= 0.07


def test_429_without_retry_after_waits_ms_before_next() -> None:
    diagnostics = json.dumps({"_remainingPoints": 0, "_msBeforeNext": 20, "_consumedPoints": 420})
    server = Server()
    server.add(
        "/fhir/R4/Patient/p1",
        httpx.Response(429, json=outcome("throttled", "Too Many Requests", diagnostics)),
        httpx.Response(200, json=PATIENT),
    )
    client, sleeps = make(server)
    assert client.read_resource("Patient", "p1")["id"] == "p1"
    assert 0.02 <= sleeps[0] <= 0.08


def test_503_then_success_and_give_up_after_limit() -> None:
    server = Server()
    server.add(
        "/fhir/R4/Patient/p1",
        httpx.Response(503, json=outcome("transient", "Service Unavailable")),
        httpx.Response(200, json=PATIENT),
    )
    client, sleeps = make(server)
    assert client.read_resource("Patient", "p1")["id"] == "p1"
    assert len(sleeps) == 1
    failing = Server()
    failing.add(
        "/fhir/R4/Patient/p1", httpx.Response(503, json=outcome("transient", "Service Unavailable"))
    )
    client, sleeps = make(failing, max_retries=3, backoff_base_s=0.1, backoff_cap_s=0.4)
    with pytest.raises(HTTPStatusError) as info:
        client.read_resource("Patient", "p1")
    assert info.value.status == 503 and len(failing.fhir()) == 4
    assert (
        str(info.value)
        == "GET https://medplum.example/fhir/R4/Patient/p1 answered 503: Service Unavailable"
    )
    # Capped exponential backoff with jitter: each wait within [ceiling/2, ceiling].
    for wait, ceiling in zip(sleeps, [0.1, 0.2, 0.4], strict=True):
        assert ceiling / 2 <= wait <= ceiling


def test_connection_errors_retry_then_transport_error() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        calls["n"] += 1
        raise httpx.ConnectError("connection refused")

    client = MedplumClient(
        BASE,
        "c",
        SECRET,
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        sleep=lambda s: None,
        max_retries=2,
    )
    with pytest.raises(TransportError) as info:
        client.read_resource("Patient", "p1")
    assert calls["n"] == 3
    assert (
        str(info.value)
        == "GET https://medplum.example/fhir/R4/Patient/p1 failed after 3 attempts: ConnectError: connection refused"
    )


def test_never_retry_4xx() -> None:
    for status in (400, 403, 404, 409, 412, 422):
        server = Server()
        server.add(
            "/fhir/R4/Patient/p1", httpx.Response(status, json=outcome("invalid", f"nope {status}"))
        )
        client, sleeps = make(server)
        with pytest.raises(HTTPStatusError) as info:
            client.read_resource("Patient", "p1")
        assert info.value.status == status and info.value.outcome_text == f"nope {status}"
        assert len(server.fhir()) == 1 and sleeps == []


def test_retried_write_is_flagged_outcome_unknown() -> None:
    server = Server()
    server.add(
        "/fhir/R4/Patient/p1/$set-accounts",
        httpx.Response(504, json=outcome("transient", "Gateway Timeout")),
        httpx.Response(
            200,
            json={
                "resourceType": "Parameters",
                "parameter": [{"name": "resourcesUpdated", "valueInteger": 1}],
            },
        ),
    )
    client, _ = make(server)
    result = client.set_accounts_result("Patient/p1", ["Organization/o1"])
    assert result.retried is True and result.status == 200
    body = json.loads(server.fhir()[0].content)
    assert body == {
        "resourceType": "Parameters",
        "parameter": [{"name": "accounts", "valueReference": {"reference": "Organization/o1"}}],
    }


def test_a_fenced_write_is_never_resent_once_the_fence_says_stop() -> None:
    """Apply's lock check runs before every attempt: a 504'd write whose lock was lost while
    it waited is not sent again (it might land after another apply took the lock over)."""
    server = Server()
    server.add(
        "/fhir/R4/Patient/p1/$set-accounts",
        httpx.Response(504, json=outcome("transient", "Gateway Timeout")),
    )
    client, _ = make(server)
    checks: list[int] = []

    class Lost(Exception):
        pass

    def fence() -> None:
        checks.append(len(server.fhir()))
        if len(checks) > 1:
            raise Lost("lost the apply lock")

    client.gate = fence
    with pytest.raises(Lost):
        client.set_accounts_result("Patient/p1", ["Organization/o1"])
    assert checks == [0, 1]  # checked before the first attempt and before the retry
    assert len(server.fhir()) == 1  # the retry was never sent


def test_non_json_and_html_bodies_are_transport_errors() -> None:
    server = Server()
    server.add(
        "/fhir/R4/Patient/p1",
        httpx.Response(200, text="<html>oops</html>", headers={"Content-Type": "text/html"}),
    )
    client, _ = make(server)
    with pytest.raises(
        TransportError, match=r"answered 200 with a body that is not JSON \(text/html\)"
    ):
        client.read_resource("Patient", "p1")
    server = Server()
    server.add("/fhir/R4/Patient", httpx.Response(200, json=outcome("exception", "weird")))
    client, _ = make(server)
    # A success status around an error outcome is an error of the server's (issue 26).
    with pytest.raises(HTTPStatusError, match="answered 200: an error, though the status says"):
        client.search("Patient", {"name": "x"})


def test_redirect_is_an_error() -> None:
    server = Server()
    server.add(
        "/fhir/R4/Patient/p1",
        httpx.Response(302, headers={"Location": "https://elsewhere.example/login?x=1"}),
    )
    client, _ = make(server)
    with pytest.raises(
        HTTPStatusError, match=r"unexpected redirect to https://elsewhere\.example/login"
    ):
        client.read_resource("Patient", "p1")


def test_search_all_follows_next_links_as_given() -> None:
    page2 = "https://medplum.example/fhir/R4/Patient?_count=2&_offset=2&name=x"
    server = Server()
    server.add(
        "/fhir/R4/Patient",
        lambda r: (
            httpx.Response(
                200,
                json={
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [
                        {"resource": {"resourceType": "Patient", "id": "a"}},
                        {"resource": {"resourceType": "Patient", "id": "b"}},
                    ],
                    "link": [{"relation": "next", "url": page2}],
                },
            )
            if "_offset" not in str(r.url)
            else httpx.Response(
                200,
                json={
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [{"resource": {"resourceType": "Patient", "id": "c"}}],
                },
            )
        ),
    )
    client, _ = make(server)
    assert [p["id"] for p in client.search_all("Patient", {"name": "x"}, page_size=2)] == [
        "a",
        "b",
        "c",
    ]
    assert str(server.fhir()[1].url) == page2
    assert server.fhir()[0].url.params["_count"] == "2"


def test_read_many_batches_post_search_forms() -> None:
    seen: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        seen.append(form)
        ids = form["_id"].split(",")
        return httpx.Response(
            200,
            json={
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [
                    {"resource": {"resourceType": "Patient", "id": i}} for i in ids if i != "gone"
                ],
            },
        )

    server = Server()
    server.add("/fhir/R4/Patient/_search", answer)
    client, _ = make(server)
    ids = [f"p{i}" for i in range(2500)] + ["gone"]
    found = client.read_many("Patient", ids, elements=["meta", "identifier"])
    assert len(found) == 2500 and len(seen) == 3
    assert [len(f["_id"].split(",")) for f in seen] == [1000, 1000, 501]
    assert all(f["_count"] == "1000" and f["_elements"] == "meta,identifier" for f in seen)
    assert all(
        r.method == "POST" and r.headers["Content-Type"] == "application/x-www-form-urlencoded"
        for r in server.fhir()
    )


def test_wrap_params_types() -> None:
    assert wrap_parameters(
        {
            "flag": True,
            "count": 10,
            "ratio": 0.5,
            "name": "x",
            "who": {"reference": "Patient/1"},
            "res": {"resourceType": "Patient"},
            "code": {"system": "s", "code": "c"},
            "many": [1, 2],
        }
    ) == {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "flag", "valueBoolean": True},
            {"name": "count", "valueInteger": 10},
            {"name": "ratio", "valueDecimal": 0.5},
            {"name": "name", "valueString": "x"},
            {"name": "who", "valueReference": {"reference": "Patient/1"}},
            {"name": "res", "resource": {"resourceType": "Patient"}},
            {"name": "code", "valueCoding": {"system": "s", "code": "c"}},
            {"name": "many", "valueInteger": 1},
            {"name": "many", "valueInteger": 2},
        ],
    }


def test_execute_operation_get_and_post() -> None:
    server = Server()
    server.add(
        "/fhir/R4/Patient/p1/$everything", httpx.Response(200, json={"resourceType": "Bundle"})
    )
    server.add(
        "/fhir/R4/Patient/$match",
        httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"}),
    )
    client, _ = make(server)
    client.execute_operation(
        "Patient", "everything", resource_id="p1", params={"_count": 10, "flag": True}, method="GET"
    )
    assert server.fhir()[0].method == "GET" and server.fhir()[0].url.params["flag"] == "true"
    client.execute_operation("Patient", "$match", params={"count": 3}, wrap_params=True)
    assert json.loads(server.fhir()[1].content) == {
        "resourceType": "Parameters",
        "parameter": [{"name": "count", "valueInteger": 3}],
    }


def test_set_accounts_prefer_async_requires_propagate() -> None:
    client, _ = make(Server())
    with pytest.raises(ValueError, match="prefer_async requires propagate"):
        client.set_accounts("Patient/p1", ["Organization/o1"], prefer_async=True)


def test_wait_for_async_job_polls_with_doubling_then_fails_with_outcome() -> None:
    job_path = "/fhir/R4/job/j1/status"
    running = {"resourceType": "AsyncJob", "id": "j1", "status": "accepted"}
    failed = {
        **running,
        "status": "error",
        "output": {
            "resourceType": "Parameters",
            "parameter": [{"name": "outcome", "resource": outcome("forbidden", "Forbidden")}],
        },
    }
    server = Server()
    server.add(job_path, *[httpx.Response(202, json=running)] * 5, httpx.Response(200, json=failed))
    client, sleeps = make(server)
    with pytest.raises(JobError) as info:
        client.wait_for_async_job(
            {
                "resourceType": "OperationOutcome",
                "issue": [{"diagnostics": BASE + "fhir/R4/job/j1/status"}],
            }
        )
    assert str(info.value) == f"async job {BASE}fhir/R4/job/j1/status ended error: Forbidden"
    assert sleeps == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    server = Server()
    server.add(job_path, httpx.Response(202, json=running))
    client = MedplumClient(
        BASE, "c", SECRET, http=httpx.Client(transport=httpx.MockTransport(server))
    )
    with pytest.raises(JobTimeout, match=r"not finished after 0\.2 s"):
        client.wait_for_async_job(BASE + "fhir/R4/job/j1/status", timeout=0.2)


def test_secret_never_in_repr() -> None:
    client, _ = make(Server())
    assert SECRET not in repr(client) and SECRET not in str(vars(client).get("client_id"))


def test_from_env_and_context_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDPLUM_BASE_URL", "https://medplum.example")
    monkeypatch.setenv("MEDPLUM_CLIENT_ID", "env-client")
    monkeypatch.setenv("MEDPLUM_CLIENT_SECRET", SECRET)
    with MedplumClient.from_env() as client:
        assert client.base_url == "https://medplum.example/"
        assert client.fhir_base == "https://medplum.example/fhir/R4/"
        assert client.client_id == "env-client"
    monkeypatch.delenv("MEDPLUM_BASE_URL")
    from reconciler.medplum.errors import MedplumError

    with pytest.raises(MedplumError, match="MEDPLUM_BASE_URL is not set"):
        MedplumClient.from_env()


def test_token_refreshed_before_expiry_and_never_per_request() -> None:
    lifetime = {"value": 0.4}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            tokens.append(1)
            return httpx.Response(
                200, json={"access_token": f"t{len(tokens)}", "expires_in": lifetime["value"]}
            )
        return httpx.Response(200, json=PATIENT)

    import time

    tokens: list[int] = []
    client = MedplumClient(
        BASE, "c", SECRET, http=httpx.Client(transport=httpx.MockTransport(handler))
    )
    client.read_resource("Patient", "p1")
    time.sleep(0.25)  # past half the 0.4 s lifetime: renewed before the request, not on a 401
    client.read_resource("Patient", "p1")
    assert len(tokens) == 2
    # expires_in 0 (or less) must not mean a token request before every request.
    lifetime["value"] = 0
    fresh = MedplumClient(
        BASE, "c", SECRET, http=httpx.Client(transport=httpx.MockTransport(handler))
    )
    for _ in range(3):
        fresh.read_resource("Patient", "p1")
    assert len(tokens) == 3


def test_401_without_credentials_says_which_variables_to_set() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json=outcome("login", "Unauthorized"))

    client = MedplumClient(BASE, http=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(AuthError) as info:
        client.read_resource("Patient", "p1")
    assert str(info.value) == (
        "GET https://medplum.example/fhir/R4/Patient/p1 answered 401: Unauthorized "
        "(no client credentials: set MEDPLUM_CLIENT_ID and MEDPLUM_CLIENT_SECRET)"
    )


def test_half_configured_credentials_are_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.connect import ServerOptions, connect
    from reconciler.errors import UsageError

    monkeypatch.setenv("MEDPLUM_CLIENT_ID", "only-the-id")
    monkeypatch.delenv("MEDPLUM_CLIENT_SECRET", raising=False)
    expected = "set both MEDPLUM_CLIENT_ID and MEDPLUM_CLIENT_SECRET"
    with (
        pytest.raises(UsageError, match=expected),
        connect(ServerOptions(server="https://medplum.example")),
    ):
        pass
