"""`reconciler sandbox load FILE|-`: your own resources into the sandbox's data file — one
resource, a JSON array of them, or a Bundle's entries. A resource without an id gets one; one
with the type and id of a stored resource replaces it (a new version)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from reconciler.sandbox.store import Resource, Store

ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class LoadError(ValueError):
    """What is wrong with the file, in one line naming it."""


@dataclass
class Loaded:
    resources: int
    new: int
    by_type: dict[str, int]


def parse(text: str, source: str) -> list[Resource]:
    """The resources in `text`, or a one-line error naming `source`, the line and what."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadError(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        items: list[Any] = [e.get("resource") if isinstance(e, dict) else e
                            for e in data.get("entry") or []]  # fmt: skip
        where = "entry[{}].resource"
    elif isinstance(data, list):
        items, where = data, "[{}]"
    else:
        items, where = [data], "{}"
    out: list[Resource] = []
    for index, item in enumerate(items):
        at = where.format(index) if "{}" in where and where != "{}" else "the document"
        if not isinstance(item, dict) or not isinstance(item.get("resourceType"), str):
            raise LoadError(f"{source}: {at}: not a FHIR resource (no resourceType)")
        rtype = item["resourceType"]
        if not rtype[:1].isupper() or rtype == "Bundle":
            raise LoadError(f"{source}: {at}: resourceType {rtype!r} cannot be loaded")
        rid = item.get("id")
        if rid is not None and (not isinstance(rid, str) or not ID.match(rid)):
            raise LoadError(f"{source}: {at}: id {rid!r} is not a FHIR id")
        meta = item.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise LoadError(f"{source}: {at}: meta must be an object")
        out.append({**item, "id": rid or str(uuid.uuid4()), "meta": dict(meta or {})})
    if not out:
        raise LoadError(f"{source}: no resources in it")
    return out


def load(store: Store, resources: list[Resource]) -> Loaded:
    by_type: dict[str, int] = {}
    existing = 0
    for resource in resources:
        by_type[resource["resourceType"]] = by_type.get(resource["resourceType"], 0) + 1
        existing += store.get(resource["resourceType"], resource["id"]) is not None
    store.bulk_insert(resources, replace=True)
    return Loaded(len(resources), len(resources) - existing, by_type)
