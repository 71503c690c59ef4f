"""jsonschema errors in words: one human sentence per problem, with the field path."""

from __future__ import annotations

from typing import Any

from jsonschema.exceptions import ValidationError, best_match

from reconciler.suggest import did_you_mean
from reconciler.yamlsafe import PathKey

RESULT_CONTROL_PARAMS = (
    "_count",
    "_summary",
    "_elements",
    "_include",
    "_revinclude",
    "_sort",
    "_total",
    "_offset",
    "_cursor",
)


def _python_type(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
        type(None): "null",
    }.get(type(value), type(value).__name__)


_EXPECTED_TYPE = {"object": "mapping", "array": "list"}


def _intended(error: ValidationError) -> tuple[int, int, int, int, str]:
    """best_match key (smaller = likelier what the author meant): the deepest error, in a
    branch whose type fits the value and whose keys the value uses; then the earlier branch."""
    wrong_type = error.validator == "type" and not error.relative_path
    overlap = 0
    if isinstance(error.instance, dict) and isinstance(error.schema, dict):
        overlap = len(set(error.instance) & set(error.schema.get("properties", {})))
    branch = error.relative_schema_path[0] if error.relative_schema_path else 0
    return (
        -len(error.relative_path),
        int(wrong_type),
        -overlap,
        branch if isinstance(branch, int) else 0,
        str(error.validator),
    )


def explain(error: ValidationError) -> tuple[PathKey, str]:
    """Turn a jsonschema error into (field path, one human sentence)."""
    path: PathKey = tuple(error.absolute_path)
    field = path[-1] if path else None
    instance: Any = error.instance
    schema: Any = error.schema
    expected_value: Any = error.validator_value
    v = error.validator
    if v == "oneOf":
        branch = best_match([error], key=_intended)
        fits_no_branch = branch is not None and _intended(branch)[:2] == (0, 1)
        if branch is not None and branch is not error and not fits_no_branch:
            return explain(branch)
        if field == "account" or (len(path) >= 2 and path[-2] == "account"):
            return path, (
                "expected a reference 'Type/id' or a mapping {identifier: 'system|value', "
                f"type: Type}}, got {_python_type(instance)}"
            )
        if "resources" in path:
            return path, (
                "expected 'Type/<id>', {type: Type, identifier: 'system|value'} or "
                f"{{search: 'Type?query'}}, got {_python_type(instance)}"
            )
        if "members" in path:
            return path, (
                "expected 'ProjectMembership/<id>', {profile: 'Type/id'}, "
                "{identifier: 'system|value'} or {search: '<query>'}, "
                f"got {_python_type(instance)}"
            )
        return path, (
            "expected 'Patient/<id>', {identifier: 'system|value'} or {search: '<query>'}, "
            f"got {_python_type(instance)}"
        )
    if v == "additionalProperties":
        allowed = set(schema.get("properties", {}))
        unknown = sorted(k for k in instance if k not in allowed)
        key = unknown[0] if unknown else "?"
        known = ", ".join(sorted(allowed))
        return (*path, key), f"unknown key {key!r} (allowed: {known})"
    if v == "anyOf" and field == "spec":
        return path, "a tenant needs at least one of 'patients', 'resources' or 'access'"
    if v == "required":
        missing = [k for k in expected_value if k not in instance]
        keys = ", ".join(repr(k) for k in missing)
        return path, f"missing required key{'s' if len(missing) > 1 else ''} {keys}"
    if v == "const":
        hint = did_you_mean(str(instance), [str(error.validator_value)])
        return path, f"expected {error.validator_value!r}, got {instance!r}{hint}"
    if v == "enum":
        options = ", ".join(str(o) for o in expected_value)
        hint = did_you_mean(str(instance), [str(o) for o in expected_value])
        return path, f"expected one of: {options}; got {instance!r}{hint}"
    if v == "type":
        expected = _EXPECTED_TYPE.get(str(error.validator_value), str(error.validator_value))
        return path, f"expected a {expected}, got {_python_type(instance)}"
    if v == "minItems":
        return path, "must have at least one entry"
    if v in ("minLength",):
        return path, "must not be empty"
    if v == "maxLength":
        return path, f"is longer than {error.validator_value} characters"
    if v == "pattern":
        return path, _pattern_message(path, str(instance))
    return path, error.message


def _pattern_message(path: PathKey, value: str) -> str:
    field = path[-1] if path else ""
    if field == "name":
        return (
            f"{value!r} is not a valid tenant name "
            "(lowercase letters, digits and '-', at most 63, not starting or ending with '-')"
        )
    if field == "search":
        query = value.split("?", 1)[1] if "resources" in path and "?" in value else value
        for part in query.lstrip("?").split("&"):
            key = part.split("=", 1)[0].split(":", 1)[0]
            if key in RESULT_CONTROL_PARAMS:
                return f"result-control parameter {key!r} is not allowed in a search selector"
        if "members" in path:
            return (
                f"{value!r} is not a ProjectMembership search query like "
                "'profile-type=Practitioner'"
            )
        if "resources" in path:
            return f"{value!r} is not a search like 'Location?organization=Organization/x'"
        return f"{value!r} is not a Patient search query like 'name=Smith&birthdate=1980-01-01'"
    if field == "policy":
        return f"{value!r} is not a reference of the form 'AccessPolicy/<id>'"
    if field == "parameter":
        return f"{value!r} is not a policy parameter name like 'organization'"
    if field == "profile":
        return f"{value!r} is not a reference of the form 'Type/id'"
    if "members" in path:
        return f"{value!r} is not a reference of the form 'ProjectMembership/<id>'"
    if "resources" in path:
        return f"{value!r} is not a reference of the form 'Type/<id>'"
    if field in ("identifier",):
        return f"{value!r} is not an identifier of the form 'system|value'"
    if field == "type":
        return f"{value!r} is not a FHIR resource type"
    if field == "account":
        return f"{value!r} is not a reference of the form 'Type/id'"
    return f"{value!r} is not a reference of the form 'Patient/<id>'"
