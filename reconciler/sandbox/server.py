"""HTTP glue: ThreadingHTTPServer around App, the `serve` loop, and the embedded mode."""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qsl, urlsplit

from reconciler.sandbox.app import App, Config
from reconciler.sandbox.messages import Request
from reconciler.sandbox.store import Store

DEFAULT_DATA = ".reconciler/sandbox.sqlite"
MAX_BODY = 64 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections like with Medplum
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms a response). Real servers set TCP_NODELAY; so do we.
    disable_nagle_algorithm = True
    server: SandboxHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        return  # requests are counted in App.stats; no per-request noise on stderr

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            # The client went away mid-body (killed, timed out). Like Medplum's body parser
            # ("request aborted"), handle nothing: a missing body read as empty would run
            # $set-accounts with no accounts and clear the resource's.
            self.close_connection = True
            return
        host, port = self.server.host_port
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qsl(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            # Like Medplum, links and job URLs use the server's own configured base, not the
            # Host the client called (clients must not follow them to another origin).
            base=f"http://{host}:{port}",
        )
        response = self.server.app.handle(request)
        payload = response.encode()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        super().__init__(address, _Handler)
        self.app = app
        self.closing = False

    def handle_error(self, request: object, client_address: object) -> None:
        # A connection still open while the server stops (keep-alive, a client mid-request)
        # meets a closed database: that is the stop, not an error worth a traceback.
        if self.closing:
            return
        exc = sys.exc_info()[1]
        print(f"sandbox: request failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.server_address[:2]
        return (host.decode() if isinstance(host, bytes) else str(host)), int(port)

    @property
    def url(self) -> str:
        host, port = self.host_port
        return f"http://{host}:{port}"


def build(config: Config, data: str, host: str, port: int) -> SandboxHTTPServer:
    store = Store(data)
    return SandboxHTTPServer((host, port), App(config, store))


def serve(config: Config, data: str, host: str, port: int) -> int:
    server = build(config, data, host, port)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"Sandbox listening on {server.url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.closing = True
        server.server_close()
        server.app.close()
        server.app.store.close()
    print("Sandbox stopped.", file=sys.stderr, flush=True)
    return 0


@dataclass
class Embedded:
    """The sandbox started in-process on a loopback port, for CLI runs with no server set."""

    server: SandboxHTTPServer
    thread: threading.Thread
    data_path: str
    client_id: str = "sandbox-admin"
    client_secret: str = "sandbox-secret"

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def identity(self) -> str:
        return f"sandbox:{Path(self.data_path).resolve()}"

    def stop(self) -> None:
        self.server.closing = True
        self.server.shutdown()
        self.server.server_close()
        self.server.app.close()
        self.server.app.store.close()


def start_embedded(data: str = DEFAULT_DATA, config: Config | None = None) -> Embedded:
    server = build(config or Config(), data, "127.0.0.1", 0)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        daemon=True,
        name="embedded-sandbox",
    )
    thread.start()
    return Embedded(server=server, thread=thread, data_path=data)
