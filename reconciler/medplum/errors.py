"""Client errors: "could not reach the server" is kept apart from "the server said no"."""

from __future__ import annotations

from typing import Any

from reconciler.errors import ReconcilerError


class MedplumError(ReconcilerError):
    """Base class of every error the client raises. Messages never hold secrets or tokens."""


class TransportError(MedplumError):
    """No usable answer: connection refused/reset, timeout, or a body that is not FHIR JSON."""


class HTTPStatusError(MedplumError):
    def __init__(
        self,
        status: int,
        method: str,
        url: str,
        outcome_text: str,
        outcome: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.outcome_text = outcome_text
        self.outcome = outcome
        super().__init__(f"{method} {url} answered {status}: {outcome_text}")


class AuthError(HTTPStatusError):
    pass


class JobError(MedplumError):
    def __init__(self, job_url: str, status: str, outcome_text: str) -> None:
        self.job_url = job_url
        self.status = status
        self.outcome_text = outcome_text
        super().__init__(f"async job {job_url} ended {status}: {outcome_text}")


class JobTimeout(JobError):
    def __init__(self, job_url: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(job_url, "timeout", f"not finished after {timeout:g} s")


def outcome_text(body: Any) -> str:
    """The human text of an OperationOutcome (details.text, else diagnostics, else code)."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in body.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        text = (
            (issue.get("details") or {}).get("text")
            or issue.get("diagnostics")
            or issue.get("code")
        )
        if text:
            parts.append(str(text))
    return "; ".join(parts)
