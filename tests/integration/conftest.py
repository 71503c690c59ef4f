from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.helpers import run_cli
from tests.sandbox_process import InProcessSandbox

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run the CLI in-process against a sandbox process: (exit code, stdout, stderr)."""

    def run(sb: InProcessSandbox, *args: str) -> tuple[int, str, str]:
        return run_cli(sb, monkeypatch, capsys, *args)

    return run
