"""Secrets never reach any output: every known secret value — the client secret, access
tokens, the RECONCILER_* keys — is replaced by `***` in every error, log line, event and crash
file, whatever the server echoes back (a 500 that quotes the Authorization header, say).

A secret is masked in every form it can take on the way out, so masking after encoding misses
nothing: as it is, JSON-escaped (ASCII or not), as Python's repr writes it, and URL-encoded.
Everything written passes here, so under `--redact` this is also where patient identifiers
are replaced by their keyed hashes (phi.py)."""

from __future__ import annotations

import json
import os
import threading
from urllib.parse import quote, quote_plus

from reconciler import phi

MASK = "***"
MIN_LENGTH = 6  # shorter values would mask ordinary words
SECRET_VARIABLES = ("MEDPLUM_CLIENT_SECRET", "RECONCILER_REDACT_KEY", "RECONCILER_PLAN_KEY")

_lock = threading.Lock()
_secrets: set[str] = set()


def forms(value: str) -> set[str]:
    """The ways `value` can appear in text we write."""
    return {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        value.encode("unicode_escape").decode("ascii"),
    }


def register(value: str | None) -> None:
    if value and len(value) >= MIN_LENGTH:
        with _lock:
            _secrets.update(f for f in forms(value) if len(f) >= MIN_LENGTH)


def register_environment() -> None:
    for name in SECRET_VARIABLES:
        register(os.environ.get(name))


def scrub(text: str) -> str:
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    return phi.redact(text)  # under --redact, no patient identifier either (phi.py)
