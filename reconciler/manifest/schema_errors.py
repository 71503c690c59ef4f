"""The tenant schema's errors for one document, fast on large patient lists.

jsonschema walks each `spec.patients` entry through the selector's `oneOf` (~100 µs each:
100 s for a million patients). An entry that is a plain `Patient/<id>` string matching the
schema's own first branch is valid whatever else is true, so only the other entries are given
to jsonschema, and the indexes in its errors are mapped back to the entries' places in the file.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import jsonschema

from reconciler.schemas import load_schema


@cache
def tenant_validator() -> jsonschema.Draft202012Validator:
    schema = load_schema("tenant.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@cache
def _plain_reference() -> re.Pattern[str]:
    """The selector's string branch, read from the schema so the two cannot drift apart."""
    branch = load_schema("tenant.schema.json")["$defs"]["selector"]["oneOf"][0]
    assert branch["type"] == "string"
    return re.compile(branch["pattern"])


def schema_errors(data: Any) -> list[Any]:  # jsonschema.ValidationError, loosely typed there
    spec = data.get("spec") if isinstance(data, dict) else None
    patients = spec.get("patients") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(patients, list) or len(patients) < 100:
        return list(tenant_validator().iter_errors(data))
    plain = _plain_reference()
    kept = [i for i, p in enumerate(patients) if not (isinstance(p, str) and plain.search(p))]
    reduced = {**data, "spec": {**spec, "patients": [patients[i] for i in kept]}}
    errors = list(tenant_validator().iter_errors(reduced))
    for error in errors:
        path = error.path  # the same deque as relative_path; nested errors derive from it
        if len(path) >= 3 and path[0] == "spec" and path[1] == "patients":
            path[2] = kept[path[2]]
    return errors
