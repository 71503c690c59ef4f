"""Reliability suite plumbing: a recognisable client secret on every sandbox, a CLI runner that
records every byte the tool prints (for the secret-leak checks), and the figures of a run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from reconciler.cli import main
from reconciler.medplum.client import MedplumClient
from tests.sandbox_process import InProcessSandbox, SandboxProcess

SECRET = "S3CR3T-reliability-must-never-leak-7f3a"
CLIENT_ID = "rel-admin"
CREDS = (CLIENT_ID, SECRET)
TOKEN_PREFIX = "sbx_"  # every sandbox access token starts with it
FIGURES: Counter[str] = Counter()


@dataclass
class Sandbox:
    proc: InProcessSandbox | SandboxProcess
    clients: list[MedplumClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.proc.url

    def client(self, **kwargs: Any) -> MedplumClient:
        return self.proc.client(CREDS, **kwargs)

    def stats(self) -> dict[str, Any]:
        return self.proc.stats()

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MEDPLUM_BASE_URL": self.url,
            "MEDPLUM_CLIENT_ID": CLIENT_ID,
            "MEDPLUM_CLIENT_SECRET": SECRET,
        }

    def snapshot(self) -> dict[str, str]:
        """Every resource's versionId: the proof that a run wrote nothing."""
        client = self.client()
        types = "Patient,Observation,Encounter,Organization,Basic,AuditEvent"
        params = [("_type", types), ("_count", "1000")]
        bundle = client.request("GET", client.fhir_base, params=params).body
        return {
            f"{r['resourceType']}/{r['id']}": r["meta"]["versionId"] for r in client._pages(bundle)
        }


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., Sandbox]]:
    started: list[InProcessSandbox | SandboxProcess] = []

    def start(*args: str, data: str = ":memory:", process: bool = False) -> Sandbox:
        """In this process by default; `process=True` for a server the test stops or kills."""
        kind = SandboxProcess if process else InProcessSandbox
        proc = kind(args=["--client", f"{CLIENT_ID}:{SECRET}:admin", *args], data=data).start()
        started.append(proc)
        return Sandbox(proc)

    yield start
    for proc in started:
        alive = (
            proc.server is not None
            if isinstance(proc, InProcessSandbox)
            else (proc.proc is not None and proc.proc.poll() is None)
        )
        stats = proc.stats() if alive else {}
        for key, value in stats.items():
            if key.startswith("fault_") or key in ("latency_spikes", "throttled", "jobs_failed"):
                FIGURES[f"injected {key}"] += int(value)
        FIGURES["sandbox requests"] += int(stats.get("requests", 0))
        proc.stop()


def record(*texts: str) -> None:
    """Keep what the tool printed and check it at once: a leak fails the test that caused it
    (whichever xdist worker runs it), not a sweep at the end of one worker's share."""
    for text in texts:
        FIGURES["outputs scanned for secrets"] += 1
        assert SECRET not in text, "the client secret appeared in the tool's output"
        assert TOKEN_PREFIX not in text, "a bearer token appeared in the tool's output"


@pytest.fixture
def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run the CLI in-process against a sandbox; every output is kept for the leak checks."""

    def invoke(sb: Sandbox, *args: str) -> tuple[int, str, str]:
        for key, value in sb.env().items():
            if key.startswith("MEDPLUM_"):
                monkeypatch.setenv(key, value)
        return _main_recorded(capsys, args)

    return invoke


def _main_recorded(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*args, "--log-format", "json"])
    out, err = capsys.readouterr()
    record(out, err)
    FIGURES["CLI runs"] += 1
    return code, out, err


def run_process(sb: Sandbox, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args, "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=sb.env(), **kwargs,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    record(out, err)
    FIGURES["CLI runs"] += 1
    return proc.returncode, out, err


def run_through(
    transport: Any,
    sb: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[int, str, str]:
    """Run the CLI in-process with every request going through `transport` (a racing writer in
    front of an AppSandbox); the output is recorded for the leak checks."""
    import httpx

    import reconciler.connect

    def build_client(url: str, client_id: Any, secret: Any, **_: Any) -> MedplumClient:
        return MedplumClient(url, client_id, secret, http=httpx.Client(transport=transport))

    monkeypatch.setattr(reconciler.connect, "build_client", build_client)
    monkeypatch.setenv("MEDPLUM_BASE_URL", sb.url)
    monkeypatch.setenv("MEDPLUM_CLIENT_ID", "sandbox-admin")
    monkeypatch.setenv("MEDPLUM_CLIENT_SECRET", "sandbox-secret")
    return _main_recorded(capsys, args)
