"""Secrets never reach any output: every known secret value — the client secret, access
tokens, the RECONCILER_* keys — is replaced by `***` in every error, log line, event and crash
file, whatever the server echoes back (a 500 that quotes the Authorization header, say)."""

from __future__ import annotations

import os
import threading

MASK = "***"
MIN_LENGTH = 6  # shorter values would mask ordinary words
SECRET_VARIABLES = ("MEDPLUM_CLIENT_SECRET", "RECONCILER_REDACT_KEY", "RECONCILER_PLAN_KEY")

_lock = threading.Lock()
_secrets: set[str] = set()


def register(value: str | None) -> None:
    if value and len(value) >= MIN_LENGTH:
        with _lock:
            _secrets.add(value)


def register_environment() -> None:
    for name in SECRET_VARIABLES:
        register(os.environ.get(name))


def scrub(text: str) -> str:
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    return text
