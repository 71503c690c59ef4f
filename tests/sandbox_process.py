"""Sandboxes for tests, all with one interface (url, client(), token(), stats(), stop()):

- `InProcessSandbox`: the real HTTP server on a thread of the test process — no process start,
  the default for integration tests;
- `SandboxProcess`: `reconciler sandbox serve` as a separate process, for what needs one
  (signals, kill -9, restarts, the serve command itself);
- `AppSandbox`: the application object behind an in-process `httpx` transport, no socket at
  all, with a manual clock (quota windows and token expiry without real sleeps).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from reconciler.medplum.client import MedplumClient
from reconciler.medplum.ratelimit import Pacer
from reconciler.sandbox.clock import ManualClock

ADMIN = ("sandbox-admin", "sandbox-secret")
MEMBER = ("sandbox-member", "sandbox-secret")
READER = ("sandbox-reader", "sandbox-secret")  # read-only policy, not an admin


class _Common:
    url: str
    clients: list[MedplumClient]

    def client(self, creds: tuple[str, str] = ADMIN, **kwargs: Any) -> MedplumClient:
        kwargs.setdefault("backoff_base_s", 0.01)
        kwargs.setdefault("backoff_cap_s", 0.05)
        client = MedplumClient(self.url, *creds, **kwargs)
        self.clients.append(client)
        return client

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def token(self, creds: tuple[str, str] = ADMIN) -> str:
        with self.http() as http:
            r = http.post(
                "/oauth2/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": creds[0],
                    "client_secret": creds[1],
                },
            )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def stats(self) -> dict[str, Any]:
        with self.http() as http:
            return dict(http.get("/sandbox/stats").json())

    def _close_clients(self) -> None:
        for client in self.clients:
            client.close()


def _parse_serve_args(args: Sequence[str]) -> Any:
    from reconciler.cli import build_parser
    from reconciler.commands.sandbox import config_from_args

    return config_from_args(build_parser().parse_args(["sandbox", "serve", *args]))


@dataclass
class InProcessSandbox(_Common):
    args: Sequence[str] = ()
    data: str = ":memory:"
    url: str = ""
    clients: list[MedplumClient] = field(default_factory=list)
    server: Any = None
    proc: None = None  # no process: tests that need one use SandboxProcess

    def start(self) -> InProcessSandbox:
        from reconciler.sandbox.server import build

        self.server = build(_parse_serve_args(self.args), self.data, "127.0.0.1", 0)
        threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="test-sandbox",
        ).start()
        self.url = self.server.url
        return self

    def stop(self) -> int:
        self._close_clients()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server.app.close()
            self.server.app.store.close()
            self.server = None
        return 0


@dataclass
class SandboxProcess(_Common):
    args: Sequence[str] = ()
    data: str = ":memory:"
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    clients: list[MedplumClient] = field(default_factory=list)

    def start(self) -> SandboxProcess:
        cmd = [
            sys.executable, "-m", "reconciler", "sandbox", "serve",
            "--port", "0", "--data", self.data, "--log-format", "json", *self.args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("Sandbox listening on "):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"sandbox did not start: {line!r} {err}")
        self.url = line.removeprefix("Sandbox listening on ")
        return self

    def stop(self) -> int:
        self._close_clients()
        if self.proc is None:
            return 0
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class AppSandbox(_Common):
    """The sandbox's App behind an in-process transport, on a manual clock."""

    def __init__(self, *args: str, data: str = ":memory:") -> None:
        from reconciler.sandbox.app import App
        from reconciler.sandbox.store import Store
        from reconciler.sandbox.transport import SandboxTransport

        self.clock = ManualClock()
        self.app = App(_parse_serve_args(args), Store(data), clock=self.clock)
        self.transport = SandboxTransport(self.app)
        self.url = "http://sandbox.test"
        self.clients = []

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, transport=self.transport)

    def client(self, creds: tuple[str, str] = ADMIN, **kwargs: Any) -> MedplumClient:
        kwargs.setdefault("backoff_base_s", 0.01)
        kwargs.setdefault("backoff_cap_s", 0.05)
        kwargs.setdefault("sleep", self.clock.sleep)
        kwargs.setdefault("pacer", Pacer(clock=self.clock.now, sleep=self.clock.sleep))
        client = MedplumClient(
            self.url, *creds, http=httpx.Client(transport=self.transport), **kwargs
        )
        self.clients.append(client)
        return client

    def stop(self) -> int:
        self._close_clients()
        self.app.close()
        self.app.store.close()
        return 0
