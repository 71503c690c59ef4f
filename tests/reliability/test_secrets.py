"""Secrets and PHI: the client secret and bearer tokens never appear in any output, plan file,
log or audit record; plan files are 0600; --redact output holds no patient id or identifier."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from reconciler.cli import main
from reconciler.medplum.accounts import first_identifier
from tests.integration.helpers import create_org, create_patients, tenant_yaml, write
from tests.reliability.conftest import FIGURES, SECRET, TOKEN_PREFIX, record

Run = Any


def test_every_command_keeps_secrets_out(sandbox_factory: Any, run: Run, tmp_path: Path) -> None:
    sb = sandbox_factory("--propagate-cap", "1", "--fault", "503:0.1", "--random-seed", "2")
    client = sb.client(max_retries=20)
    org = create_org(client)
    refs = create_patients(client, 5, compartment=3)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("s", org, refs))
    plan_file = tmp_path / "plan.json"
    outputs = [
        run(sb, "validate", manifests, "-v"),
        run(sb, "plan", manifests, "-v", "--out", str(plan_file)),
        run(sb, "plan", manifests, "--format", "markdown", "-v"),
        run(sb, "apply", str(plan_file), "-v"),
        run(sb, "verify", manifests, "--repair", "-v"),
        run(sb, "import", "--account", org, "-v"),
        run(sb, "accounts", refs[0], "-v"),
    ]
    assert [o[0] for o in outputs] == [0, 0, 0, 0, 0, 0, 0]
    assert stat.S_IMODE(os.stat(plan_file).st_mode) == 0o600
    audit = json.dumps(list(client.search_all("AuditEvent", {})))
    texts = [o[1] + o[2] for o in outputs] + [plan_file.read_text(), audit]
    for text in texts:
        assert SECRET not in text and TOKEN_PREFIX not in text
    # Logs carry no resource bodies: no patient names/identifiers in -v logs of a plan.
    assert "urn:test:mrn" not in outputs[1][2]


def test_wrong_secret_error_does_not_echo_it(
    sandbox_factory: Any, run: Run, tmp_path: Path, monkeypatch: Any
) -> None:
    sb = sandbox_factory()
    org = create_org(sb.client())
    manifests = write(tmp_path, "t.yaml", tenant_yaml("s", org, ["Patient/x"]))
    monkeypatch.setenv("MEDPLUM_BASE_URL", sb.url)
    monkeypatch.setenv("MEDPLUM_CLIENT_ID", "rel-admin")
    monkeypatch.setenv("MEDPLUM_CLIENT_SECRET", "wrong-" + SECRET)
    code = main(["plan", manifests, "--log-format", "json"])
    assert code == 1


def test_redacted_output_has_no_patient_ids_or_identifiers(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory()
    client = sb.client()
    org = create_org(client)
    refs = create_patients(client, 4)
    identifiers = [first_identifier(client.read_resource(*r.split("/"))) or "" for r in refs]
    manifests = write(tmp_path, "t.yaml", tenant_yaml("r", org, refs))
    for fmt in ("text", "json", "markdown"):
        code, out, _ = run(sb, "plan", manifests, "--redact", "--format", fmt)
        assert code == 0 and "redacted-" in out
        for ref, ident in zip(refs, identifiers, strict=True):
            assert ref.split("/")[1] not in out
            assert ident.split("|")[1] not in out
    FIGURES["redacted renders checked"] += 3


def test_the_output_check_catches_a_leak() -> None:
    """Every CLI run of the reliability suite goes through record(); prove it would fail."""
    import pytest

    with pytest.raises(AssertionError, match="client secret"):
        record(f"Error: server said invalid client_secret={SECRET}")
    with pytest.raises(AssertionError, match="bearer token"):
        record(f"Authorization: Bearer {TOKEN_PREFIX}abc")
    FIGURES["outputs scanned for secrets"] -= 2


def test_a_server_that_echoes_the_secret_and_token_gets_them_masked(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    """A hostile or buggy server quotes the Authorization header and the client secret back in
    its errors: every error line, log line and JSON event masks them (hardening, point 6)."""
    import httpx

    import reconciler.connect
    from reconciler.medplum.client import MedplumClient

    token = "tok-" + "z" * 40

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            return httpx.Response(200, json={"access_token": token, "expires_in": 3600})
        if request.url.path == "/auth/me":
            return httpx.Response(
                200, json={"membership": {"id": "m", "admin": True}, "profile": {"secret": SECRET}}
            )
        echo = f"bad request; you sent {request.headers.get('Authorization')} secret={SECRET}"
        return httpx.Response(
            400,
            json={"resourceType": "OperationOutcome",
                  "issue": [{"severity": "error", "code": "invalid", "details": {"text": echo}}]},
        )  # fmt: skip

    def build_client(url: str, client_id: Any, secret: Any, **_: Any) -> MedplumClient:
        http = httpx.Client(transport=httpx.MockTransport(handler))
        return MedplumClient(url, client_id, secret, http=http, max_retries=0)

    monkeypatch.setattr(reconciler.connect, "build_client", build_client)
    monkeypatch.setenv("MEDPLUM_BASE_URL", "https://echo.example")
    monkeypatch.setenv("MEDPLUM_CLIENT_ID", "echo-client")
    monkeypatch.setenv("MEDPLUM_CLIENT_SECRET", SECRET)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", "Organization/o1", ["Patient/p1"]))
    for args in (
        ["plan", manifests, "-v"],
        ["apply", manifests, "--auto-approve", "--format", "json", "-v"],
    ):
        capsys.readouterr()
        code = main([*args, "--log-format", "json"])
        out, err = capsys.readouterr()
        assert code == 1
        assert "you sent Bearer ***" in err and "secret=***" in err, err
        assert SECRET not in out + err and token not in out + err
        record(out, err)
