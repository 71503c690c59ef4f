"""structlog set-up: readable on a terminal, JSON lines otherwise; always on stderr."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

from reconciler.scrub import scrub

SECRET_KEYS = {"client_secret", "access_token", "token", "authorization", "password"}


def _drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Belt and braces: no code logs these keys, but a future one must not leak them either;
    # and any known secret value inside any string (an error that echoes one) is masked.
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = "[redacted]"
        elif isinstance(event[key], str):
            event[key] = scrub(event[key])
    return event


_status_lock = threading.RLock()
_status_line: str = ""  # the live progress line on a terminal, redrawn under each log line


def set_status_line(text: str) -> None:
    """Show (or, with "", clear) the one-line progress on stderr; log lines go above it."""
    global _status_line
    with _status_lock:
        _status_line = text
        sys.stderr.write("\r\033[K" + text)
        sys.stderr.flush()


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time (tests swap it; pipelines may close it).
    A log line never tears the progress line: it is cleared first and redrawn after."""

    _mid_line = False

    def write(self, text: str) -> int:
        text = scrub(text)  # the whole rendered line: values inside lists and dicts too
        with _status_lock:
            if _status_line and not self._mid_line:
                sys.stderr.write("\r\033[K")
            written = sys.stderr.write(text)
            self._mid_line = not text.endswith("\n")
            if _status_line and not self._mid_line:
                sys.stderr.write(_status_line)
            return written

    def flush(self) -> None:
        sys.stderr.flush()


def configure(log_format: str | None = None, verbosity: int = 0, *, color: bool = True) -> None:
    if log_format is None:
        log_format = "console" if sys.stderr.isatty() else "json"
    level = logging.INFO - 10 * verbosity
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        colors = color and sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(max(level, logging.DEBUG)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
