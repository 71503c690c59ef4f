"""Nothing hangs and nothing blows up (hardening, point 5): a dripping body, an endless body,
a dripping job poll and deeply nested JSON each end in one clean error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import JobTimeout, TransportError


class Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = ""

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"access_token": "tok-hostile-123", "expires_in": 3600}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        mode = type(self).mode
        self.send_response(200 if mode != "poll-drip" else 202)
        self.send_header("Content-Type", "application/fhir+json")
        if mode == "nested":
            body = b"[" * 100_000 + b"]" * 100_000
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for _ in range(10_000):
                chunk = b" " if mode in ("drip", "poll-drip") else b" " * 65536
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                if mode in ("drip", "poll-drip"):
                    time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            return


@pytest.fixture
def hostile() -> Iterator[tuple[str, type[Hostile]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()  # fmt: skip
    yield f"http://127.0.0.1:{server.server_address[1]}", Hostile
    server.shutdown()
    server.server_close()


def client(url: str, **kwargs: Any) -> MedplumClient:
    return MedplumClient(url, "c", "s3cret-hostile", max_retries=0, **kwargs)


def test_a_dripping_body_ends_at_the_timeout(hostile: Any) -> None:
    url, handler = hostile
    handler.mode = "drip"
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"the answer took longer than 1 s"):
        client(url, timeout=1).read_resource("Patient", "p")
    assert time.monotonic() - started < 5


def test_an_endless_body_ends_at_the_size_cap(hostile: Any) -> None:
    url, handler = hostile
    handler.mode = "endless"
    with pytest.raises(TransportError, match=r"the answer is larger than 1 MB"):
        client(url, max_response_bytes=1024 * 1024).read_resource("Patient", "p")


def test_a_dripping_job_poll_is_bounded_by_the_job_timeout(hostile: Any) -> None:
    url, handler = hostile
    handler.mode = "poll-drip"
    started = time.monotonic()
    with pytest.raises(JobTimeout):
        client(url, timeout=30).wait_for_async_job(f"{url}/fhir/R4/job/j/status", timeout=1)
    assert time.monotonic() - started < 5


def test_json_nested_beyond_what_python_parses_is_a_clean_error(hostile: Any) -> None:
    url, handler = hostile
    handler.mode = "nested"
    with pytest.raises(TransportError, match="not JSON"):
        client(url).read_resource("Patient", "p")
