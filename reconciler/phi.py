"""Under `--redact`, no patient identifier reaches any output line (design section 10).

Plans are redacted structurally (plan/render.py); this is the net under everything else —
errors, warnings, log lines, apply's events, verify's findings — applied where every line is
already scrubbed of secrets (scrub.scrub). It replaces with the same keyed hash the plans use:
- the id of every `Type/id` reference, except configuration types (Organization accounts,
  AccessPolicy, the lock's Basic, AsyncJob, AuditEvent, …) that people need to act on;
- the value of every `system|value` identifier;
- the values the manifests select by (patient and member ids, identifier values, search
  values), wherever they stand alone — registered when the manifests are loaded.

Off unless a command was given `--redact`; what is already a hash is left alone."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Iterable

PREFIX = "redacted-"
# Types whose ids are configuration, not about a person: shown so people can act on them.
KEEP_TYPES = frozenset(
    {
        "AccessPolicy", "AsyncJob", "AuditEvent", "Basic", "Bot", "ClientApplication",
        "Organization", "Project", "OperationOutcome", "SearchParameter", "StructureDefinition",
        "UserConfiguration",
    }
)  # fmt: skip
MIN_BARE = 4  # shorter values would hash counts and ordinary words
_REFERENCE = re.compile(r"\b([A-Z][A-Za-z]{2,63})/([A-Za-z0-9\-.]{1,64})")
_IDENTIFIER = re.compile(r"((?:https?|urn|oid):[^\s|'\"`<>(),;\\]+)\|([^\s'\"`<>(),;|\\\]]+)")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*")

_lock = threading.Lock()
_key: bytes | None = None
_tokens: set[str] = set()  # bare values that are whole tokens: replaced token by token
_phrases: set[str] = set()  # bare values with other characters: replaced as they are


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256, 12 hex digits: stable for one key, unrelated across keys, and — unlike a
    plain hash of a short medical record number — not reversible by trying every value."""
    return PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:12]


def enable(key: bytes) -> None:
    global _key
    with _lock:
        _key = key


def disable() -> None:
    global _key
    with _lock:
        _key = None
        _tokens.clear()
        _phrases.clear()


def enabled() -> bool:
    return _key is not None


def current_key() -> bytes:
    """The key of this run's `--redact` (plans are redacted structurally with the same one, so
    a hash in a plan and in an error line name the same value)."""
    if _key is None:
        raise RuntimeError("redaction is not enabled")
    return _key


def protect(values: Iterable[str]) -> None:
    """Values that identify a person wherever they appear alone (a selector's id, an MRN)."""
    if _key is None:
        return
    with _lock:
        for value in values:
            if len(value) < MIN_BARE or value.startswith(PREFIX):
                continue
            (_tokens if _TOKEN.fullmatch(value) else _phrases).add(value)


def redact(text: str) -> str:
    key = _key
    if key is None:
        return text

    def reference(match: re.Match[str]) -> str:
        rtype, rid = match.group(1), match.group(2)
        if rtype in KEEP_TYPES or rid.startswith(PREFIX):
            return match.group(0)
        return f"{rtype}/{keyed_hash(key, rid)}"

    def identifier(match: re.Match[str]) -> str:
        value = match.group(2)
        if value.startswith(PREFIX):
            return match.group(0)
        return f"{match.group(1)}|{keyed_hash(key, value)}"

    text = _IDENTIFIER.sub(identifier, text)
    text = _REFERENCE.sub(reference, text)
    with _lock:
        tokens, phrases = _tokens, sorted(_phrases, key=len, reverse=True)
        if tokens:
            text = _TOKEN.sub(
                lambda m: keyed_hash(key, m.group(0)) if m.group(0) in tokens else m.group(0),
                text,
            )
        for phrase in phrases:
            if phrase in text:
                text = text.replace(phrase, keyed_hash(key, phrase))
    return text
