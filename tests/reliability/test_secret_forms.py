"""Secrets masked in every form (issue 26): a client secret holding `"`, `\\`, `/`, `%` and
non-ASCII characters, echoed by a hostile server in every error, appears in no output — not
raw, not JSON-escaped (the JSON events of `apply --format json`), not URL-encoded, not as a
repr. And the sandbox answers a non-ASCII secret that is wrong with 401, not a dropped
connection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx

from reconciler.cli import main
from reconciler.scrub import forms
from tests.integration.helpers import create_org, create_patients, tenant_yaml, write
from tests.sandbox_process import AppSandbox

WEIRD = 'wé"ird\\sec/ret%41-ünïcode-8c1f'


class Echo(httpx.BaseTransport):
    """Every $set-accounts and every search error quotes the Authorization header and the
    client secret back, in the outcome text and in diagnostics."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.secret = ""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/token"):
            self.secret = dict(parse_qsl(request.content.decode())).get("client_secret", "")
        if request.url.path.endswith("/$set-accounts"):
            said = f"bad auth {request.headers.get('authorization')} for secret {self.secret}"
            body = {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "exception", "details": {"text": said},
                 "diagnostics": json.dumps({"secret": self.secret})}]}  # fmt: skip
            return httpx.Response(500, json=body, request=request)
        return self.inner.handle_request(request)


def test_a_secret_is_masked_in_every_form(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    sb = AppSandbox("--client", f"weird:{WEIRD}:admin")
    admin = sb.client(("weird", WEIRD))
    org = create_org(admin)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", org, create_patients(admin, 2)))
    echo = Echo(sb.transport)

    import reconciler.connect
    from reconciler.medplum.client import MedplumClient

    def build_client(url: str, client_id: Any, secret: Any, **_: Any) -> MedplumClient:
        return MedplumClient(url, client_id, secret, http=httpx.Client(transport=echo),
                             max_retries=1, backoff_base_s=0.01)  # fmt: skip

    monkeypatch.setattr(reconciler.connect, "build_client", build_client)
    monkeypatch.setenv("MEDPLUM_BASE_URL", sb.url)
    monkeypatch.setenv("MEDPLUM_CLIENT_ID", "weird")
    monkeypatch.setenv("MEDPLUM_CLIENT_SECRET", WEIRD)
    outputs = []
    for args in (["apply", manifests, "--auto-approve", "--format", "json"],
                 ["apply", manifests, "--auto-approve"]):  # fmt: skip
        capsys.readouterr()
        code = main([*args, "--log-format", "json", "-v"])
        out, err = capsys.readouterr()
        assert code == 1
        outputs.append(out + err)
    assert echo.secret == WEIRD  # the hostile server did have it to echo
    assert any('"event": "change_errored"' in text for text in outputs)
    for text in outputs:
        for form in forms(WEIRD):
            assert form not in text, (form, text[:500])
        assert "sbx_" not in text


def test_a_wrong_non_ascii_secret_is_a_401() -> None:
    sb = AppSandbox()
    with sb.http() as http:
        r = http.post("/oauth2/token", data={"grant_type": "client_credentials",
                                             "client_id": "sandbox-admin", "client_secret": "sécret"})  # fmt: skip
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
