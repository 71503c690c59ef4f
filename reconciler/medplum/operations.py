"""FHIR operations with pymedplum's names and shapes: execute_operation, set_accounts, async jobs,
C-CDA export and terminology."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.medplum._types import Requester, Result
from reconciler.medplum.errors import (
    JobError,
    JobTimeout,
    MedplumError,
    TransportError,
    outcome_text,
)

FIRST_POLL_S = 0.05
MAX_POLL_S = 2.0


class JobTimer:
    """How long async jobs take on this server, learnt from the ones that finished (a moving
    average): the first poll of a job is sent when it is expected to be done, not after a
    fixed doubling — fewer polls, and the job's end seen sooner."""

    def __init__(self, first_guess_s: float = FIRST_POLL_S) -> None:
        self._expected = first_guess_s
        self._seen = 0
        self._lock = threading.Lock()

    def expected(self) -> float:
        with self._lock:
            return self._expected

    def record(self, seconds: float) -> None:
        with self._lock:
            self._seen += 1
            weight = 1 / min(self._seen, 10)  # the first ones count fully, then a 10-job average
            self._expected += (max(FIRST_POLL_S, seconds) - self._expected) * weight


def _typed_value(value: Any) -> tuple[str, Any]:
    # bool before int: True is an int in Python.
    if isinstance(value, bool):
        return "valueBoolean", value
    if isinstance(value, int):
        return "valueInteger", value
    if isinstance(value, float):
        return "valueDecimal", value
    if isinstance(value, Mapping):
        if "resourceType" in value:
            return "resource", dict(value)
        if "reference" in value:
            return "valueReference", dict(value)
        if "code" in value and "system" in value:
            return "valueCoding", dict(value)
    return "valueString", str(value)


def wrap_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """`{"count": 10, "flag": True}` → a FHIR `Parameters` resource (lists repeat the name)."""
    parameter: list[dict[str, Any]] = []
    for name, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            key, typed = _typed_value(item)
            parameter.append({"name": name, key: typed})
    return {"resourceType": "Parameters", "parameter": parameter}


def job_url(result_or_url: Any) -> str:
    """The job status URL from a 202 OperationOutcome (diagnostics), a dict with one, or a str."""
    if isinstance(result_or_url, str):
        return result_or_url
    if isinstance(result_or_url, Mapping):
        if result_or_url.get("resourceType") == "AsyncJob" and result_or_url.get("id"):
            return f"job/{result_or_url['id']}/status"
        for key in ("content_location", "Content-Location", "url"):
            if isinstance(result_or_url.get(key), str):
                return str(result_or_url[key])
        for issue in result_or_url.get("issue") or []:
            diagnostics = issue.get("diagnostics") if isinstance(issue, Mapping) else None
            if isinstance(diagnostics, str) and "/job/" in diagnostics:
                return diagnostics
    raise MedplumError("no async job URL in that result (was the call made with prefer_async?)")


class OperationsMixin(Requester):
    """Relies on MedplumClient.request/read_resource; kept apart to keep each module small."""

    job_timer: JobTimer

    def execute_operation(
        self,
        resource_type: str,
        operation: str,
        *,
        resource_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        method: str = "POST",
        wrap_params: bool = False,
    ) -> Any:
        op = operation if operation.startswith("$") else f"${operation}"
        path = f"{resource_type}/{resource_id}/{op}" if resource_id else f"{resource_type}/{op}"
        if method.upper() == "GET":
            query = [
                (k, str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in (params or {}).items()
            ]
            return self.request("GET", path, params=query, expect_json=True).body
        body: Any = dict(params or {})
        if wrap_params:
            body = wrap_parameters(body)
        return self.request(method.upper(), path, json=body).body

    def set_accounts_result(
        self,
        resource_ref: str | Mapping[str, Any],
        account_refs: str | Sequence[str | Mapping[str, Any]],
        *,
        propagate: bool = False,
        prefer_async: bool = False,
        cost: int | None = None,
        reserved: bool = False,
    ) -> Result:
        """`$set-accounts` returning the full Result (status, headers, whether it was retried);
        a write: it passes the client's gate before each attempt (see `request`). `cost`: what
        the quota will be charged (medplum/costs.py); `reserved`: the caller reserved it."""
        if prefer_async and not propagate:
            raise ValueError("prefer_async requires propagate=True (Medplum runs it synchronously)")
        if isinstance(resource_ref, Mapping):
            ref = f"{resource_ref['resourceType']}/{resource_ref['id']}"
        else:
            ref = resource_ref
        refs = [account_refs] if isinstance(account_refs, (str, Mapping)) else list(account_refs)
        parameter: list[dict[str, Any]] = []
        for item in refs:
            # A Mapping is sent as it is: Medplum stores the given References whole, so a
            # `display` or an identifier-only Reference survives the write.
            value = dict(item) if isinstance(item, Mapping) else {"reference": item}
            parameter.append({"name": "accounts", "valueReference": value})
        if propagate:
            parameter.append({"name": "propagate", "valueBoolean": True})
        headers = {"Prefer": "respond-async"} if prefer_async else None
        return self.request(
            "POST",
            f"{ref}/$set-accounts",
            json={"resourceType": "Parameters", "parameter": parameter},
            headers=headers,
            cost=cost,
            reserved=reserved,
        )

    def set_accounts(
        self,
        resource_ref: str | Mapping[str, Any],
        account_refs: str | Sequence[str | Mapping[str, Any]],
        *,
        propagate: bool = False,
        prefer_async: bool = False,
    ) -> dict[str, Any]:
        """Replace a resource's accounts. Sync: the `Parameters` (resourcesUpdated). Async: the
        202 OperationOutcome, whose diagnostics hold the job URL for wait_for_async_job."""
        result = self.set_accounts_result(
            resource_ref, account_refs, propagate=propagate, prefer_async=prefer_async
        )
        body = dict(result.body or {})
        if result.status == 202 and result.headers.get("Content-Location"):
            body.setdefault("content_location", result.headers["Content-Location"])
        return body

    def get_async_job_status(
        self, result_or_url: Any, *, deadline_s: float | None = None
    ) -> dict[str, Any]:
        body = self.request("GET", job_url(result_or_url), ok=(202,), deadline_s=deadline_s).body
        if not isinstance(body, dict) or body.get("resourceType") != "AsyncJob":
            raise MedplumError("the job status URL did not answer with an AsyncJob")
        return body

    def wait_for_async_job(
        self,
        result_or_url: Any,
        *,
        timeout: float | None = None,
        first_poll_s: float | None = None,
        max_poll_s: float = MAX_POLL_S,
        started_at: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends: first when jobs here are seen to end (`job_timer`; 50 ms
        before any ended), then from 50 ms doubling, capped at 2 s. Returns the completed
        AsyncJob; raises JobError (with the outcome text) or JobTimeout."""
        url = job_url(result_or_url)
        now = time.monotonic()
        sent = started_at if started_at is not None else now
        deadline = None if timeout is None else now + timeout
        expected = self.job_timer.expected() if first_poll_s is None else first_poll_s
        delay = 2 * (FIRST_POLL_S if first_poll_s is None else first_poll_s)
        # The job started when the server accepted it: count the first delay from when the
        # request was sent, so a round trip is not added on top of it.
        first: float | None = max(0.0, expected - (now - sent)) if started_at else expected
        while True:
            if first is not None:
                pause, first = first, None
            else:
                pause = delay
                delay = min(delay * 2, max_poll_s)
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            self.sleep(pause)
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:  # a slow poll counts against --job-timeout too
                job = self.get_async_job_status(url, deadline_s=remaining)
            except TransportError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobTimeout(url, float(timeout or 0)) from None
                raise
            status = job.get("status")
            if status in ("completed", "error", "cancelled"):
                self.job_timer.record(time.monotonic() - sent)
            if status == "completed":
                return job
            if status in ("error", "cancelled"):
                raise JobError(url, str(status), _job_outcome(job) or str(status))
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(url, float(timeout or 0))

    def export_ccda(self, patient_id: str) -> str:
        return str(
            self.request("GET", f"Patient/{patient_id}/$ccda-export", expect_json=False).body
        )

    def validate_valueset_code(self, valueset_url: str, coding: Mapping[str, Any]) -> bool:
        # Typed as the operation declares them (url is a uri, coding a Coding): Medplum reads
        # parameters by declared type and does not see a `url` sent as valueString.
        body = self.execute_operation(
            "ValueSet",
            "validate-code",
            params={
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "url", "valueUri": valueset_url},
                    {"name": "coding", "valueCoding": dict(coding)},
                ],
            },
        )
        return bool(parameter_value(body, "result"))

    def expand_valueset(self, valueset_url: str, *, filter: str | None = None) -> dict[str, Any]:
        params = {"url": valueset_url}
        if filter:
            params["filter"] = filter
        return dict(self.execute_operation("ValueSet", "expand", params=params, method="GET"))

    def lookup_concept(self, code: str, system: str) -> dict[str, Any]:
        return dict(
            self.execute_operation(
                "CodeSystem", "lookup", params={"code": code, "system": system}, method="GET"
            )
        )

    def translate_concept(
        self,
        code: str,
        system: str,
        target_system: str | None = None,
        *,
        conceptmap_url: str | None = None,
        source: str | None = None,
        conceptmap_id: str | None = None,
    ) -> dict[str, Any]:
        """`$translate` needs a ConceptMap (Medplum: 400 "No ConceptMap specified"): its
        `conceptmap_url`, a `source` ValueSet, or its id (an instance-level call)."""
        if not (conceptmap_url or source or conceptmap_id):
            raise MedplumError("translate_concept needs conceptmap_url, source or conceptmap_id")
        params = {"code": code, "system": system}
        if target_system:
            params["targetsystem"] = target_system
        if conceptmap_url:
            params["url"] = conceptmap_url
        if source:
            params["source"] = source
        return dict(
            self.execute_operation(
                "ConceptMap", "translate", resource_id=conceptmap_id, params=params, method="GET"
            )
        )


def parameter_value(body: Any, name: str) -> Any:
    """The value (`value[x]` or `resource`) of the first parameter called `name` in a
    FHIR `Parameters` resource, or None."""
    for p in (body or {}).get("parameter") or []:
        if p.get("name") == name:
            for key, value in p.items():
                if key.startswith("value") or key == "resource":
                    return value
    return None


def _job_outcome(job: Mapping[str, Any]) -> str:
    return outcome_text(parameter_value(job.get("output"), "outcome"))
