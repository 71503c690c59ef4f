from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.sandbox_process import SandboxProcess


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxProcess]:
    """One shared sandbox process (data in memory) for tests that only add their own data."""
    proc = SandboxProcess().start()
    yield proc
    proc.stop()


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., SandboxProcess]]:
    """A fresh sandbox process with its own flags, stopped after the test."""
    started: list[SandboxProcess] = []

    def start(*args: str, data: str = ":memory:") -> SandboxProcess:
        proc = SandboxProcess(args=list(args), data=data).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
