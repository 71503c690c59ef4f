"""OperationOutcome bodies with the ids, codes and texts real Medplum 5.0.10 answers with."""

from __future__ import annotations

import json
from typing import Any


class FhirError(Exception):
    def __init__(self, status: int, outcome: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(outcome_text(outcome))
        self.status = status
        self.outcome = outcome
        self.headers = headers or {}


def outcome_text(outcome: dict[str, Any]) -> str:
    issue = (outcome.get("issue") or [{}])[0]
    return str((issue.get("details") or {}).get("text") or issue.get("diagnostics") or "")


def outcome(
    code: str, text: str, *, severity: str = "error", oid: str | None = None, diagnostics: str = ""
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "details": {"text": text}}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    body: dict[str, Any] = {"resourceType": "OperationOutcome", "issue": [issue]}
    if oid:
        body = {"resourceType": "OperationOutcome", "id": oid, "issue": [issue]}
    return body


def not_found() -> FhirError:
    return FhirError(404, outcome("not-found", "Not found", oid="not-found"))


def forbidden() -> FhirError:
    return FhirError(403, outcome("forbidden", "Forbidden", oid="forbidden"))


def bad_request(text: str) -> FhirError:
    return FhirError(400, outcome("invalid", text))


def unauthorized() -> FhirError:
    return FhirError(401, outcome("login", "Unauthorized", oid="unauthorized"))


def throttled(ms_before_next: int, consumed: int, limit: int) -> dict[str, Any]:
    diagnostics = json.dumps(
        {
            "_remainingPoints": 0,
            "_msBeforeNext": ms_before_next,
            "_consumedPoints": consumed,
            "_isFirstInDuration": False,
            "limit": limit,
        },
        separators=(",", ":"),
    )
    return outcome(
        "throttled", "Too Many Requests", oid="too-many-requests", diagnostics=diagnostics
    )


def accepted(status_url: str) -> dict[str, Any]:
    return outcome(
        "informational", "Accepted", severity="information", oid="accepted", diagnostics=status_url
    )


def all_ok() -> dict[str, Any]:
    return outcome("informational", "All OK", severity="information", oid="ok")
