from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.sandbox_process import AppSandbox, InProcessSandbox


@pytest.fixture(scope="session")
def _config_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where this test session's per-user plan-signing key lives: never the real home."""
    return str(tmp_path_factory.mktemp("config-home"))


@pytest.fixture(autouse=True)
def _not_in_ci(monkeypatch: pytest.MonkeyPatch, _config_home: str) -> None:
    """CI runs the suite with CI=true, which changes what the tool does (no silent sandbox,
    --redact needs a key): each test that wants CI behaviour sets it itself."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("RECONCILER_REDACT_KEY", raising=False)
    monkeypatch.delenv("RECONCILER_PLAN_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", _config_home)


def resign(data: dict[str, Any]) -> dict[str, Any]:
    """An attacker who has the signing key too: re-digest and re-sign an edited plan, so the
    layers behind the signature (consistency, derivation, the write-time checks) are tested."""
    from reconciler.plan.jsonform import digest_of
    from reconciler.plan.signing import plan_key, sign

    data.pop("signature", None)
    data["plan_digest"] = digest_of(data)
    data["signature"] = sign(data["plan_digest"], plan_key(create=True, purpose="test").key)
    return data


@pytest.fixture(scope="session")
def sandbox() -> Iterator[InProcessSandbox]:
    """One shared sandbox (data in memory) for tests that only add their own data."""
    sb = InProcessSandbox().start()
    yield sb
    sb.stop()


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., InProcessSandbox]]:
    """A fresh sandbox with its own flags (real HTTP, in this process), stopped after the test."""
    started: list[InProcessSandbox] = []

    def start(*args: str, data: str = ":memory:") -> InProcessSandbox:
        sb = InProcessSandbox(args=list(args), data=data).start()
        started.append(sb)
        return sb

    yield start
    for sb in started:
        sb.stop()


@pytest.fixture
def make_app_sandbox() -> Iterator[Callable[..., AppSandbox]]:
    """A fresh sandbox application behind an in-process transport, on a manual clock."""
    started: list[AppSandbox] = []

    def start(*args: str, data: str = ":memory:") -> AppSandbox:
        sb = AppSandbox(*args, data=data)
        started.append(sb)
        return sb

    yield start
    for sb in started:
        sb.stop()


# --- the reliability suite's figures, summed over pytest-xdist workers ------------------------


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.reliability.conftest import FIGURES

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the figures to the controller
        workeroutput["reliability_figures"] = dict(FIGURES)


def pytest_testnodedown(node: Any, error: Any) -> None:
    from tests.reliability.conftest import FIGURES

    FIGURES.update(getattr(node, "workeroutput", {}).get("reliability_figures", {}))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.reliability.conftest import FIGURES

    if FIGURES:
        terminalreporter.write_line(
            "reliability figures: " + json.dumps(dict(sorted(FIGURES.items())))
        )
