"""Start `reconciler sandbox serve` as a separate process for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from reconciler.medplum.client import MedplumClient

ADMIN = ("sandbox-admin", "sandbox-secret")
MEMBER = ("sandbox-member", "sandbox-secret")


@dataclass
class SandboxProcess:
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

    def client(self, creds: tuple[str, str] = ADMIN, **kwargs: Any) -> MedplumClient:
        kwargs.setdefault("backoff_base_s", 0.01)
        kwargs.setdefault("backoff_cap_s", 0.05)
        client = MedplumClient(self.url, *creds, **kwargs)
        self.clients.append(client)
        return client

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def token(self, creds: tuple[str, str] = ADMIN) -> str:
        r = httpx.post(
            f"{self.url}/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": creds[0],
                "client_secret": creds[1],
            },
        )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/sandbox/stats").json())

    def stop(self) -> int:
        for client in self.clients:
            client.close()
        if self.proc is None:
            return 0
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
