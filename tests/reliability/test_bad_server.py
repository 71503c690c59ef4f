"""Bad server answers: invalid JSON, HTML error pages, a Bundle without entry, a 200 carrying an
OperationOutcome, a redirect, a hung connection. Each: a clear error, exit 1, no partial plan."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.cli import main
from tests.integration.helpers import tenant_yaml
from tests.reliability.conftest import FIGURES, SECRET, record

ORG = "Organization/00000000-0000-4000-8000-0000000000aa"
PATIENT = "Patient/00000000-0000-4000-8000-0000000000bb"
BUNDLE_ORG = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": {"resourceType": "Organization", "id": ORG.split("/")[1], "meta": {"versionId": "1"}}}]}  # fmt: skip


class BadServer(ThreadingHTTPServer):
    daemon_threads = True
    mode = ""


class Handler(BaseHTTPRequestHandler):
    server: BadServer

    def log_message(self, format: str, *args: object) -> None:
        return

    def send(
        self, status: int, body: bytes, ctype: str = "application/fhir+json", **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        if self.path == "/oauth2/token":
            self.send(
                200,
                json.dumps({"access_token": "sbx_bad-server-token", "expires_in": 3600}).encode(),
                "application/json",
            )
            return
        # POST _search: the account check passes, the patient look-up misbehaves.
        if "Organization/_search" in self.path:
            self.send(200, json.dumps(BUNDLE_ORG).encode())
            return
        self.misbehave(body)

    def do_GET(self) -> None:
        self.misbehave("")

    def misbehave(self, body: str) -> None:
        mode = self.server.mode
        if mode == "invalid-json":
            self.send(200, b'{"resourceType": "Bundle", "entry": [')
        elif mode == "html-error":
            self.send(
                500, b"<html><body><h1>500 Internal Server Error</h1></body></html>", "text/html"
            )
        elif mode == "bundle-without-entry":
            self.send(200, json.dumps({"resourceType": "Bundle", "type": "searchset"}).encode())
        elif mode == "outcome-200":
            self.send(200, json.dumps({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "exception", "details": {"text": "Something odd"}}]}).encode())  # fmt: skip
        elif mode == "redirect":
            self.send(302, b"", Location="https://login.example/sso?next=/fhir")
        elif mode == "hang":
            time.sleep(30)


@pytest.fixture
def bad_server() -> Iterator[BadServer]:
    server = BadServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


EXPECTED = {
    "invalid-json": "answered 200 with a body that is not JSON (application/fhir+json)",
    "html-error": "answered 500: Internal Server Error (non-FHIR body, text/html)",
    "bundle-without-entry": f"{PATIENT} does not exist (tenant 't')",
    "outcome-200": "answered 200: an error, though the status says success: Something odd",
    "redirect": "unexpected redirect to https://login.example/sso",
    "hang": "failed after 3 attempts: ReadTimeout",
}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_bad_server_answers(mode: str, bad_server: BadServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    bad_server.mode = mode
    host, port = bad_server.server_address[:2]
    monkeypatch.setenv("MEDPLUM_BASE_URL", f"http://{host!s}:{port}")
    monkeypatch.setenv("MEDPLUM_CLIENT_ID", "rel-admin")
    monkeypatch.setenv("MEDPLUM_CLIENT_SECRET", SECRET)
    path = tmp_path / "t.yaml"
    path.write_text(tenant_yaml("t", ORG, [PATIENT]))
    import httpx

    import reconciler.connect
    from reconciler.medplum.client import MedplumClient

    def fast(
        url: str, client_id: str, secret: str, *, timeout: float, **_: object
    ) -> MedplumClient:
        # Fewer, quicker retries than a real run, through the CLI's own client factory.
        return MedplumClient(
            url, client_id, secret, http=httpx.Client(timeout=timeout), timeout=timeout,
            max_retries=2, backoff_base_s=0.01,
        )  # fmt: skip

    monkeypatch.setattr(reconciler.connect, "build_client", fast)
    capsys.readouterr()
    started = time.monotonic()
    code = main(["plan", str(path), "--timeout", "0.3", "--log-format", "json"])
    out, err = capsys.readouterr()
    record(out, err)
    FIGURES["bad server answers tried"] += 1
    assert code == 1
    assert out == ""  # no partial plan printed as if complete
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith(("Error:", str(path)))]
    assert any(EXPECTED[mode] in line for line in errors), err
    assert time.monotonic() - started < 20
