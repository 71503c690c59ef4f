"""Account helpers (pymedplum names): a resource's accounts are the union of `meta.accounts` and
the legacy `meta.account`, deduplicated by reference, in order (medplum-api.md, meta.accounts)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def get_resource_accounts(resource: Mapping[str, Any]) -> list[str]:
    meta = resource.get("meta") or {}
    refs: list[str] = []
    for entry in meta.get("accounts") or []:
        ref = entry.get("reference") if isinstance(entry, Mapping) else None
        if isinstance(ref, str) and ref and ref not in refs:
            refs.append(ref)
    legacy = meta.get("account")
    if isinstance(legacy, Mapping):
        ref = legacy.get("reference")
        if isinstance(ref, str) and ref and ref not in refs:
            refs.append(ref)
    return refs


def resource_has_account(resource: Mapping[str, Any], account_ref: str) -> bool:
    return account_ref in get_resource_accounts(resource)


def first_identifier(resource: Mapping[str, Any]) -> str | None:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("value"):
            return f"{ident.get('system') or ''}|{ident['value']}"
    return None


RAW_PREFIX = "raw:"


def account_entries(resource: Mapping[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """Every `meta.accounts` entry as (key, original): the key is the reference for a
    reference entry, `raw:<canonical JSON>` for one without a reference (an identifier-only
    Reference); the original is kept (not None) whenever it holds more than the reference
    (`display`, `identifier`), so writing the list back loses nothing."""
    meta = resource.get("meta") or {}
    out: list[tuple[str, dict[str, Any] | None]] = []
    seen: set[str] = set()
    entries = list(meta.get("accounts") or [])
    if isinstance(meta.get("account"), Mapping):
        entries.append(meta["account"])
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        ref = entry.get("reference")
        if isinstance(ref, str) and ref:
            key = ref
        else:
            key = RAW_PREFIX + json.dumps(dict(entry), sort_keys=True, separators=(",", ":"))
        if key in seen:
            continue
        seen.add(key)
        out.append((key, dict(entry) if set(entry) != {"reference"} else None))
    return out


def entry_for(key: str, originals: Mapping[str, Mapping[str, Any]]) -> str | dict[str, Any]:
    """What to send back for an account key: its original entry when there was more to it."""
    if key in originals:
        return dict(originals[key])
    if key.startswith(RAW_PREFIX):
        loaded: dict[str, Any] = json.loads(key[len(RAW_PREFIX) :])
        return loaded
    return key
