"""Unit tests that need a server use the sandbox's App behind an in-process transport."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler.medplum.client import MedplumClient
from tests.sandbox_process import AppSandbox


@pytest.fixture
def app_sandbox() -> Iterator[AppSandbox]:
    sb = AppSandbox()
    yield sb
    sb.stop()


@pytest.fixture
def client(app_sandbox: AppSandbox) -> MedplumClient:
    return app_sandbox.client()
