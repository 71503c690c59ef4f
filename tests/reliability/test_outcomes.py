"""Outcomes told exactly (issue 26): a write answered 200 with an error OperationOutcome is a
failure; a job whose polls fail after it was accepted is found out by re-reading its patient;
and resources apply could not check for other writers' changes end the run with exit 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.integration.helpers import (
    accounts_by_ref,
    create_org,
    create_patients,
    tenant_yaml,
    write,
)
from tests.reliability.conftest import run_through
from tests.sandbox_process import AppSandbox


class Hostile(httpx.BaseTransport):
    """The sandbox, with some answers replaced by what a misbehaving proxy or server says."""

    def __init__(self, inner: httpx.BaseTransport, mode: str) -> None:
        self.inner, self.mode = inner, mode

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if self.mode == "error-200" and path.endswith("/$set-accounts"):
            body = {"resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "processing",
                               "details": {"text": "Could not update accounts"}}]}  # fmt: skip
            return httpx.Response(200, json=body, request=request)
        response = self.inner.handle_request(request)
        if self.mode == "poll-401" and "/job/" in path and path.endswith("/status"):
            body = {"resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "login", "details": {"text": "Unauthorized"}}]}  # fmt: skip
            return httpx.Response(401, json=body, request=request)
        if self.mode == "history-refused" and request.method == "POST" and path.endswith("R4/"):
            sent = json.loads(request.content or b"{}")
            entries = sent.get("entry") or []
            if entries and all(e["request"]["url"].endswith("/_history") for e in entries):
                refused = {"status": "403", "outcome": {"resourceType": "OperationOutcome",
                           "issue": [{"severity": "error", "code": "forbidden"}]}}  # fmt: skip
                body = {"resourceType": "Bundle", "type": "batch-response",
                        "entry": [{"response": refused} for _ in entries]}  # fmt: skip
                return httpx.Response(200, json=body, request=request)
        return response


def _scenario(tmp_path: Path, *args: str) -> tuple[AppSandbox, str, list[str], str]:
    sb = AppSandbox(*args)
    admin = sb.client()
    org = create_org(admin)
    refs = create_patients(admin, 3, compartment=1)
    return sb, org, refs, write(tmp_path, "t.yaml", tenant_yaml("t", org, refs))


def test_a_write_answered_200_with_an_error_outcome_is_a_failure(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    sb, _, refs, manifests = _scenario(tmp_path)
    hostile = Hostile(sb.transport, "error-200")
    code, out, _ = run_through(hostile, sb, monkeypatch, capsys, "apply", manifests,
                               "--auto-approve")  # fmt: skip
    assert code == 1
    assert "Apply failed: 3 of 3 patients not updated." in out
    assert "an error, though the status says success: Could not update accounts" in out
    assert "Apply complete!" not in out
    assert all(a == [] for a in accounts_by_ref(sb.client(), refs).values())


def test_a_job_whose_polls_fail_is_found_out_by_reading_its_patient(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    sb, org, refs, manifests = _scenario(tmp_path)
    hostile = Hostile(sb.transport, "poll-401")
    code, out, err = run_through(hostile, sb, monkeypatch, capsys, "apply", manifests,
                                 "--auto-approve")  # fmt: skip
    # Every job was accepted and ran; its polls said 401: the patients say they were updated.
    assert all(a == [org] for a in accounts_by_ref(sb.client(), refs).values())
    assert code == 0, out + err
    assert "Apply complete! 3 patients updated, 3 accounts added, 0 accounts removed." in out


def test_resources_that_could_not_be_checked_end_the_run_with_exit_1(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    sb, _, refs, manifests = _scenario(tmp_path)
    hostile = Hostile(sb.transport, "history-refused")
    code, out, _ = run_through(hostile, sb, monkeypatch, capsys, "apply", manifests,
                               "--auto-approve")  # fmt: skip
    assert code == 1
    assert "Apply complete!" not in out
    assert (
        "Apply finished with 3 unchecked resources: every change was made, but whether a write "
        "of ours overwrote another writer's change could not be checked for them; run plan "
        "again and look at them."
    ) in out.splitlines()
    assert any(
        line.startswith(f"  {refs[0]}: history read answered 403") for line in out.splitlines()
    )
