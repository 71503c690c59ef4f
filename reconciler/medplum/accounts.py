"""Account helpers (pymedplum names): a resource's accounts are the union of `meta.accounts` and
the legacy `meta.account`, deduplicated by reference, in order (medplum-api.md, meta.accounts)."""

from __future__ import annotations

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
