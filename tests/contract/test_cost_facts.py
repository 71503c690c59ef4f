"""What each call costs against the FHIR quota (issue 28): the points the estimate, the pacer and
the sandbox's meter assume (reconciler/medplum/costs.py), each measured as the drop of the
`fhirInteractions` remainder in the `RateLimit` header between two one-point reads. Against the
sandbox (metered with a quota too large to reach) in `make test`; `make contract` shows whether
a given Medplum charges what the model says (observed on 5.0.10: read 1, search 20, history 10,
write 100, $set-accounts 120 + 100·k synchronously and 320 + 100·k async)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from reconciler.medplum import costs
from reconciler.medplum.ratelimit import parse_ratelimit
from tests.contract.conftest import Target
from tests.contract.test_contract import org, patients

K = 3  # compartment resources of the patient whose accounts are set


@pytest.fixture()
def http(target: Target) -> Iterator[httpx.Client]:
    base = target.url.rstrip("/")
    token = httpx.post(
        f"{base}/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": target.client_id,
              "client_secret": target.client_secret},
        timeout=30,
    ).json()["access_token"]  # fmt: skip
    with httpx.Client(
        base_url=f"{base}/fhir/R4/",
        headers={"Authorization": f"Bearer {token}", "X-Medplum": "extended"},
        timeout=120,
    ) as client:
        yield client


def remainder(response: httpx.Response) -> tuple[int, float]:
    limits = parse_ratelimit(response.headers.get("RateLimit"))
    if "fhirInteractions" not in limits:
        pytest.skip("this server sends no fhirInteractions RateLimit header: no quota to measure")
    found = limits["fhirInteractions"]
    return found.remaining, found.reset_s


def points(http: httpx.Client, probe: str, action: Callable[[], int]) -> int:
    """The points `action` cost: the remainder before it (after one read) less the remainder
    after it (one more read), less the two probes and whatever the action says it sent beside
    the call measured (job polls). Measured again when a window reset came in between."""
    for _ in range(3):
        before, reset_before = remainder(http.get(probe))
        known = action()
        after, reset_after = remainder(http.get(probe))
        if after < before and reset_after <= reset_before:  # the same window
            return before - after - costs.READ - known
        time.sleep(0.5)
    raise AssertionError("the quota window reset during every measurement")


def patient_with_compartment(target: Target, http: httpx.Client, label: str) -> str:
    (ref,) = patients(target, target.client(), 1, label)
    for _ in range(K):
        r = http.post("Observation", json={"resourceType": "Observation", "status": "final",
                                           "code": {"text": "cost"}, "subject": {"reference": ref}})  # fmt: skip
        assert r.status_code == 201, r.text
    return ref


def test_reads_searches_history_and_writes(target: Target, http: httpx.Client) -> None:
    (ref,) = patients(target, target.client(), 1, "cost-basic")

    def call(method: str, path: str, **kwargs: Any) -> Callable[[], int]:
        def send() -> int:
            assert http.request(method, path, **kwargs).status_code < 300
            return 0

        return send

    measured = {
        "read": points(http, ref, call("GET", ref)),
        "search": points(http, ref, call("GET", "Patient", params={"identifier": target.system + "|x"})),
        "history": points(http, ref, call("GET", f"{ref}/_history")),
        "write": points(http, ref, call("POST", "Patient", json={"resourceType": "Patient"})),
    }  # fmt: skip
    assert measured == {
        "read": costs.READ, "search": costs.SEARCH, "history": costs.HISTORY, "write": costs.WRITE
    }  # fmt: skip


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_set_accounts_with_propagate(
    target: Target, http: httpx.Client, asynchronous: bool
) -> None:
    account = org(target, target.client(), f"cost-{asynchronous}")
    ref = patient_with_compartment(target, http, f"cost-set-{asynchronous}")
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "accounts", "valueReference": {"reference": account}},
        {"name": "propagate", "valueBoolean": True},
    ]}  # fmt: skip

    def set_accounts() -> int:
        headers = {"Prefer": "respond-async"} if asynchronous else {}
        r = http.post(f"{ref}/$set-accounts", json=body, headers=headers)
        if not asynchronous:
            assert r.status_code == 200, r.text
            return 0
        assert r.status_code == 202, r.text
        polls, deadline = 0, time.monotonic() + 120
        while time.monotonic() < deadline:  # each poll is a one-point read, not the call's
            time.sleep(0.1)
            polls += 1
            job = http.get(r.headers["Content-Location"]).json()
            if job.get("status") in ("completed", "error"):
                assert job["status"] == "completed", job
                return polls * costs.READ
        raise AssertionError("the job did not finish in 120 s")

    expected = costs.set_accounts_cost(K, propagate=True, asynchronous=asynchronous)
    assert points(http, ref, set_accounts) == expected  # 120 + 100·k, or 320 + 100·k
