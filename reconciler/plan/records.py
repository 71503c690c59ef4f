"""Server resources as the planner keeps them (LiveResource, LiveMembership), and the fresh
re-reads of known references that apply and saved-plan checks make right before writing."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from reconciler.medplum.accounts import account_entries, first_identifier
from reconciler.medplum.client import MedplumClient
from reconciler.model import LiveMembership, LiveResource, entry_json
from reconciler.model.interning import shared

ELEMENTS = ("meta", "identifier")
MEMBERSHIP = "ProjectMembership"


def to_live_resource(resource: dict[str, Any], asked: str = "") -> LiveResource:
    """A patient or any other resource, with its accounts in order. `asked`: the reference
    it was read by, kept as its own when it is this resource's (one string, not two)."""
    # Interning: 100,000 patients share a handful of account strings (plan RSS at scale).
    entries = account_entries(resource)
    ref = f"{resource['resourceType']}/{resource['id']}"
    return LiveResource(
        ref=asked if asked == ref else ref,
        version_id=str((resource.get("meta") or {}).get("versionId", "")),
        accounts=shared(tuple(sys.intern(key) for key, _ in entries)),
        identifier=first_identifier(resource),
        originals=tuple((k, json.dumps(e, sort_keys=True)) for k, e in entries if e is not None),
    )


def to_live_membership(resource: dict[str, Any]) -> LiveMembership:
    raw = resource.get("profile")
    profile: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return LiveMembership(
        reference=f"{MEMBERSHIP}/{resource['id']}",
        version_id=str((resource.get("meta") or {}).get("versionId", "")),
        entries=tuple(entry_json(e) for e in resource.get("access") or [] if isinstance(e, dict)),
        has_access_policy=isinstance(resource.get("accessPolicy"), dict),
        admin=resource.get("admin") is True,
        profile=profile.get("reference") if isinstance(profile.get("reference"), str) else None,
        display=profile.get("display") if isinstance(profile.get("display"), str) else None,
        access_policy=_reference(resource.get("accessPolicy")),
        user=_display(resource.get("user")),
    )


def _display(value: Any) -> str | None:
    shown = value.get("display") if isinstance(value, dict) else None
    return shown if isinstance(shown, str) and shown else None


def _reference(value: Any) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) and ref else None


def read_resources(client: MedplumClient, refs: Sequence[str]) -> dict[str, LiveResource]:
    """Fresh accounts and versions of these resources, any types (batched per type); deleted
    ones are absent."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for ref in refs:
        rtype, rid = ref.split("/", 1)
        by_type[rtype].append(rid)
    found: dict[str, LiveResource] = {}
    for rtype, ids in by_type.items():
        for resource in client.iter_many(rtype, ids, elements=ELEMENTS):
            live = to_live_resource(resource)
            found[live.ref] = live
    return found


def read_memberships(client: MedplumClient, refs: Sequence[str]) -> dict[str, LiveMembership]:
    """Fresh versions and entries of these memberships (batched); deleted ones are absent."""
    ids = [ref.split("/", 1)[1] for ref in refs]
    return {m.reference: m for m in map(to_live_membership, client.iter_many(MEMBERSHIP, ids))}
