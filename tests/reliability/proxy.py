"""A hostile proxy of our own in front of a sandbox, and a recorder on a second loopback address.

The proxy forwards every request to the sandbox and, by mode, turns its answers hostile:

- `rewrite`: every URL of the sandbox's origin in a body or a `Content-Location` (Bundle `next`
  links, async job URLs in the 202 and its OperationOutcome) points at the recorder instead;
- `self-next`: every searchset Bundle links `next` to the very request that produced it;
- `echo`: every FHIR error answer echoes the request's Authorization header and the client's
  secret (the token endpoint's form) in its OperationOutcome;
- `drip`: FHIR answers trickle out one byte every 0.2 s.

The recorder (127.0.0.2) answers 404 to everything and keeps every request's headers: the
proof that no token left the configured origin.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "accept-encoding"}
KEPT_HEADERS = ("content-type", "content-location", "location", "etag", "ratelimit")


@dataclass
class Recorder:
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""


@dataclass
class Proxy:
    upstream: str
    mode: str
    recorder: Recorder
    url: str = ""
    secret_seen: list[str] = field(default_factory=list)


def _server(host: str, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()  # fmt: skip
    return server


@contextmanager
def hostile_proxy(upstream: str, mode: str) -> Iterator[Proxy]:
    recorder = Recorder()

    class Record(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def _any(self) -> None:
            recorder.requests.append((self.command, self.path, dict(self.headers.items())))
            body = b'{"resourceType":"OperationOutcome","issue":[]}'
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _any

    rec_server = _server("127.0.0.2", Record)
    recorder.url = f"http://127.0.0.2:{rec_server.server_address[1]}"
    proxy = Proxy(upstream.rstrip("/"), mode, recorder)
    http = httpx.Client(timeout=30)

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.startswith("/oauth2/token"):
                proxy.secret_seen += [
                    v for k, v in httpx.QueryParams(body.decode()).multi_items()
                    if k == "client_secret"
                ]  # fmt: skip
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            answer = http.request(
                self.command, proxy.upstream + self.path, headers=headers, content=body
            )
            status, out_headers = (
                answer.status_code,
                {k: answer.headers[k] for k in KEPT_HEADERS if k in answer.headers},
            )
            data = answer.content
            fhir = self.path.startswith("/fhir/")
            if mode == "rewrite":
                data = data.replace(proxy.upstream.encode(), recorder.url.encode())
                if "content-location" in out_headers:
                    out_headers["content-location"] = out_headers["content-location"].replace(
                        proxy.upstream, recorder.url
                    )
            elif mode == "self-next" and fhir:
                parsed = _json(data)
                if isinstance(parsed, dict) and parsed.get("type") == "searchset":
                    own = f"{proxy.upstream}{self.path}"
                    if self.command == "POST" and self.path.split("?")[0].endswith("/_search"):
                        # A POSTed search's own page, as the GET a `next` link is.
                        own = f"{proxy.upstream}{self.path.split('?')[0][:-8]}?{body.decode()}"
                    parsed["link"] = [{"relation": "next", "url": own}]
                    data = json.dumps(parsed).encode()
            elif mode == "echo" and fhir and status >= 400:
                echoed = f"{self.headers.get('Authorization')} {' '.join(proxy.secret_seen)}"
                data = json.dumps({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "processing", "details": {"text": echoed}}
                ]}).encode()  # fmt: skip
            self.send_response(status)
            for key, value in out_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                if mode == "drip" and fhir:
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(0.2)
                    return
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client gave up on us: what the drip is for

        do_GET = do_POST = do_PUT = do_DELETE = _any

    server = _server("127.0.0.1", Forward)
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield proxy
    finally:
        for s in (server, rec_server):
            s.shutdown()
            s.server_close()
        http.close()


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None
