"""Tenant manifests: files → schema-checked YAML documents → Tenant objects, with locations."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from reconciler.errors import ManifestError
from reconciler.medplum.compartment import PATIENT_COMPARTMENT_TYPES
from reconciler.model import (
    AccountRef,
    Grant,
    Location,
    ManifestSet,
    MemberKind,
    MemberSelector,
    Membership,
    ResourceSelector,
    Selector,
    SelectorKind,
    Tenant,
)
from reconciler.schemas import load_schema
from reconciler.yamlsafe import Document, PathKey, YamlProblem, load_documents, read_text

MANIFEST_SUFFIXES = (".yaml", ".yml")
DEFAULT_PATHS = ["tenants/"]  # what commands read when given no PATH (design section 2)
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


@cache
def _tenant_validator() -> jsonschema.Draft202012Validator:
    schema = load_schema("tenant.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def discover(paths: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Expand file and directory arguments into manifest files, sorted by path in each dir."""
    files: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                (p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES),
                key=lambda p: p.as_posix(),
            )
            if not found:
                problems.append(f"{raw}: error: no manifest files (*.yaml, *.yml) in directory")
            root = path.resolve()
            for candidate in found:
                if candidate.is_symlink() and not candidate.resolve().is_relative_to(root):
                    # A link out of the manifests tree (to /etc/shadow, say) is never read:
                    # its lines would end up in error messages.
                    problems.append(
                        f"{candidate.as_posix()}: error: a link to a file outside {raw}; not read"
                    )
                elif candidate.is_file():
                    files.append(candidate)
                elif not candidate.is_dir():  # a dangling link, a socket, …: say so, not skip
                    problems.append(f"{candidate.as_posix()}: error: not a readable file")
        elif path.exists():
            files.append(path)
        else:
            problems.append(f"{raw}: error: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


def _problem(file: str, doc: Document | None, path: PathKey, message: str) -> str:
    line, column = doc.position(path) if doc is not None else (1, 1)
    return f"{file}:{line}:{column}: error: {format_path(path)}: {message}"


def load_manifests(paths: Sequence[str]) -> ManifestSet:
    """Load and validate every manifest; raise ManifestError listing every problem found."""
    files, problems = discover(paths)
    tenants: list[Tenant] = []
    digest = hashlib.sha256()
    for file in files:
        name = file.as_posix()
        try:
            raw, text = read_text(file)
            documents = load_documents(text)
        except YamlProblem as exc:
            problems.append(f"{name}:{exc.line}:{exc.column}: error: {exc.message}")
            continue
        digest.update(raw)
        if not documents:
            problems.append(f"{name}:1:1: error: file holds no YAML documents")
            continue
        for doc in documents:
            errors = _schema_problems(name, doc)
            if errors:
                problems.extend(errors)
                continue
            tenants.append(_to_tenant(name, doc))
    problems.extend(cross_file_problems(tenants))
    if problems:
        raise ManifestError(problems)
    return ManifestSet(
        tenants=tuple(tenants),
        files=tuple(f.as_posix() for f in files),
        digest="sha256:" + digest.hexdigest(),
    )


def _schema_problems(file: str, doc: Document) -> list[str]:
    errors = sorted(
        _tenant_validator().iter_errors(doc.data), key=lambda e: doc.position(tuple(e.path))
    )
    out: list[str] = []
    for error in errors:
        if error.validator == "additionalProperties":
            # Every unknown key of a block, each at its own line (`membrship` and
            # `propogate` in one spec are two problems, not one).
            allowed = set(error.schema.get("properties", {}))
            known = ", ".join(sorted(allowed))
            base: PathKey = tuple(error.absolute_path)
            for key in sorted(k for k in error.instance if k not in allowed):
                message = f"unknown key {key!r} (allowed: {known})"
                out.append(_problem(file, doc, (*base, key), message))
            continue
        path, message = explain(error)
        out.append(_problem(file, doc, path, message))
    return out


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
        return path, f"expected {error.validator_value!r}, got {instance!r}"
    if v == "enum":
        options = ", ".join(str(o) for o in expected_value)
        return path, f"expected one of: {options}; got {instance!r}"
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


def _loc(file: str, doc: Document, path: PathKey) -> Location:
    line, column = doc.position(path)
    return Location(file, line, column)


def _to_tenant(file: str, doc: Document) -> Tenant:
    data = doc.data
    spec = data["spec"]
    account_raw = spec["account"]
    account_loc = _loc(file, doc, ("spec", "account"))
    if isinstance(account_raw, str):
        account = AccountRef(location=account_loc, reference=account_raw)
    else:
        account = AccountRef(
            location=account_loc,
            identifier=account_raw["identifier"],
            type=account_raw["type"],
        )
    selectors: list[Selector] = []
    for i, entry in enumerate(spec.get("patients") or []):
        loc = _loc(file, doc, ("spec", "patients", i))
        if isinstance(entry, str):
            selectors.append(Selector(SelectorKind.ID, entry, loc))
        elif "identifier" in entry:
            selectors.append(Selector(SelectorKind.IDENTIFIER, entry["identifier"], loc))
        else:
            selectors.append(Selector(SelectorKind.SEARCH, entry["search"].lstrip("?"), loc))
    return Tenant(
        name=data["metadata"]["name"],
        description=data["metadata"].get("description"),
        account=account,
        membership=Membership(spec.get("membership", "authoritative")),
        propagate=bool(spec.get("propagate", True)),
        patients=tuple(selectors),
        location=_loc(file, doc, ("metadata", "name")),
        access=tuple(_grant(file, doc, i, g) for i, g in enumerate(spec.get("access") or [])),
        resources=tuple(
            _resource(file, doc, i, r) for i, r in enumerate(spec.get("resources") or [])
        ),
    )


def _resource(file: str, doc: Document, index: int, raw: Any) -> ResourceSelector:
    loc = _loc(file, doc, ("spec", "resources", index))
    if isinstance(raw, str):
        return ResourceSelector(SelectorKind.ID, raw.split("/", 1)[0], raw, loc)
    if "identifier" in raw:
        return ResourceSelector(SelectorKind.IDENTIFIER, raw["type"], raw["identifier"], loc)
    rtype, _, query = raw["search"].partition("?")
    return ResourceSelector(SelectorKind.SEARCH, rtype, query, loc)


def _encoded_control_problems(tenant: Tenant) -> list[str]:
    """The schema sees `search` as typed; the server decodes it first. `%5Foffset=8` is
    `_offset=8` to Medplum: a result-control parameter hidden from the pattern, which would
    silently drop members from an authoritative tenant's scope. Decode, then check."""
    searches: list[tuple[str, str, Location]] = [
        (f"spec.patients[{i}].search", s.value, s.location)
        for i, s in enumerate(tenant.patients)
        if s.kind is SelectorKind.SEARCH
    ]
    searches += [
        (f"spec.resources[{i}].search", s.value, s.location)
        for i, s in enumerate(tenant.resources)
        if s.kind is SelectorKind.SEARCH
    ]
    searches += [
        (f"spec.access[{i}].members[{j}].search", m.value, m.location)
        for i, g in enumerate(tenant.access)
        for j, m in enumerate(g.members)
        if m.kind is MemberKind.SEARCH
    ]
    problems = []
    for field, query, location in searches:
        for key, _ in parse_qsl(query, keep_blank_values=True):
            if key.split(":", 1)[0] in RESULT_CONTROL_PARAMS:
                problems.append(
                    f"{location}: error: {field}: result-control parameter "
                    f"{key.split(':', 1)[0]!r} is not allowed in a search selector "
                    "(written percent-encoded)"
                )
    return problems


def _resource_type_problems(tenant: Tenant) -> list[str]:
    """Patients go under `patients`; Patient-compartment types follow their patient."""
    problems: list[str] = []
    for i, selector in enumerate(tenant.resources):
        where = f"{selector.location}: error: spec.resources[{i}]"
        if selector.type == "Patient":
            problems.append(f"{where}: Patient belongs under spec.patients, not spec.resources")
        elif selector.type in PATIENT_COMPARTMENT_TYPES:
            problems.append(
                f"{where}: {selector.type} is in the Patient compartment: it follows its "
                "patient's accounts (list the patient under spec.patients)"
            )
    return problems


def _grant(file: str, doc: Document, index: int, raw: dict[str, Any]) -> Grant:
    members: list[MemberSelector] = []
    for j, entry in enumerate(raw["members"]):
        loc = _loc(file, doc, ("spec", "access", index, "members", j))
        if isinstance(entry, str):
            members.append(MemberSelector(MemberKind.ID, entry, loc))
        else:
            (key, value), *_ = entry.items()
            members.append(MemberSelector(MemberKind(key), value.lstrip("?"), loc))
    return Grant(
        policy=raw["policy"],
        parameter=raw.get("parameter", "organization"),
        members=tuple(members),
        location=_loc(file, doc, ("spec", "access", index)),
    )


def _account_key(account: AccountRef) -> str:
    if account.reference is not None:
        return account.reference
    return f"{account.type}?identifier={account.identifier}"


def _duplicate_members(tenant: Tenant) -> list[str]:
    """A member listed twice under one policy of one tenant is a mistake (design section 8)."""
    problems: list[str] = []
    seen: dict[tuple[str, str, MemberKind, str], MemberSelector] = {}
    for i, grant in enumerate(tenant.access):
        for j, member in enumerate(grant.members):
            key = (grant.policy, grant.parameter, member.kind, member.value)
            earlier = seen.setdefault(key, member)
            if earlier is not member:
                problems.append(
                    f"{member.location}: error: spec.access[{i}].members[{j}]: member "
                    f"{member.describe()!r} is listed twice under {grant.policy} in tenant "
                    f"{tenant.name!r} (first at line {earlier.location.line})"
                )
    return problems


def cross_file_problems(tenants: Sequence[Tenant]) -> list[str]:
    problems: list[str] = []
    names: dict[str, Tenant] = {}
    accounts: dict[str, Tenant] = {}
    for tenant in tenants:
        first = names.setdefault(tenant.name, tenant)
        if first is not tenant:
            problems.append(
                f"{tenant.location}: error: metadata.name: duplicate tenant name "
                f"{tenant.name!r} (first defined at {first.location.short})"
            )
        key = _account_key(tenant.account)
        owner = accounts.setdefault(key, tenant)
        if owner is not tenant:
            problems.append(
                f"{tenant.account.location}: error: spec.account: account {key} is already "
                f"declared by tenant {owner.name!r} ({owner.account.location.short})"
            )
        problems += _duplicate_members(tenant)
        problems += _resource_type_problems(tenant)
        problems += _encoded_control_problems(tenant)
        seen_resources: dict[tuple[SelectorKind, str, str], ResourceSelector] = {}
        for i, rsel in enumerate(tenant.resources):
            first_at = seen_resources.setdefault((rsel.kind, rsel.type, rsel.value), rsel)
            if first_at is not rsel:
                problems.append(
                    f"{rsel.location}: error: spec.resources[{i}]: selector "
                    f"{rsel.describe()!r} is listed twice in tenant {tenant.name!r} "
                    f"(first at line {first_at.location.line})"
                )
        seen: dict[tuple[SelectorKind, str], Selector] = {}
        for i, selector in enumerate(tenant.patients):
            earlier = seen.setdefault((selector.kind, selector.value), selector)
            if earlier is not selector:
                problems.append(
                    f"{selector.location}: error: spec.patients[{i}]: selector "
                    f"{selector.describe()!r} is listed twice in tenant {tenant.name!r} "
                    f"(first at line {earlier.location.line})"
                )
    return problems


def select_targets(manifests: ManifestSet, targets: Sequence[str]) -> ManifestSet:
    """`--target NAME` (repeatable): only these tenants are planned; the others' accounts are
    then unmanaged for this run — kept as they are — and their selectors are not resolved."""
    if not targets:
        return manifests
    names = {t.name for t in manifests.tenants}
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise ManifestError(
            [f"error: --target {name!r} is not a tenant of these manifests (tenants: "
             f"{', '.join(sorted(names))})" for name in unknown]
        )  # fmt: skip
    return replace(manifests, tenants=tuple(t for t in manifests.tenants if t.name in targets))
