"""The one parser of `ProjectMembership.access` entries: `{"policy": {"reference": P},
"parameter": [{"name": N, "valueReference": {"reference": R}} | {"name": N, "valueString": S}]}`
(medplum-api.md, "Tenant access"). The planner, the renderers, the consistency check and
`import` all read entries through it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, TypeVar

from reconciler.model import AccessKey, Owners, parameter_id

T = TypeVar("T")
UNSAFE = ('"', "\\")  # Medplum pastes parameter values into the policy JSON unescaped


@dataclass(frozen=True, slots=True)
class EntryParameter:
    name: str
    reference: str | None = None  # valueReference.reference
    string: str | None = None  # valueString

    @property
    def value(self) -> str | None:
        """What the policy's `%name` becomes: Medplum takes a non-empty `valueString` first,
        else the `valueReference` (server source `fhir/accesspolicy.ts`)."""
        return self.string if self.string else self.reference


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    policy: str | None
    parameters: tuple[EntryParameter, ...]


def parse_entry(entry: str | Mapping[str, Any]) -> ParsedEntry | None:
    """An entry as canonical JSON text or as a mapping; None when it is not an object."""
    data: Any = entry
    if isinstance(entry, str):
        try:
            data = json.loads(entry)
        except ValueError:
            return None
    if not isinstance(data, Mapping):
        return None
    raw_policy = data.get("policy")
    policy = raw_policy.get("reference") if isinstance(raw_policy, Mapping) else None
    params: list[EntryParameter] = []
    for raw in data.get("parameter") or []:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
            continue
        ref = raw.get("valueReference")
        reference = ref.get("reference") if isinstance(ref, Mapping) else None
        string = raw.get("valueString")
        params.append(
            EntryParameter(
                str(raw["name"]),
                reference if isinstance(reference, str) else None,
                string if isinstance(string, str) else None,
            )
        )
    return ParsedEntry(policy if isinstance(policy, str) else None, tuple(params))


def entry_summary(entry_text: str) -> str:
    """`AccessPolicy/x  name=Ref` for display; unmanaged entries show what they hold."""
    parsed = parse_entry(entry_text)
    if parsed is None:
        return entry_text
    params = [f"{p.name}={p.value}" for p in parsed.parameters]
    return "  ".join([parsed.policy or "?", *params])


@dataclass(frozen=True, slots=True)
class ManagedEntry:
    key: AccessKey  # the canonical grant this entry is, whatever its form
    grants: bool  # False: it names the tenant but grants nothing (a `_history` reference)
    canonical: bool  # exactly the entry the tool writes for `key`


def managed_entry(
    entry: str | Mapping[str, Any], names: Set[tuple[str, str]], owners: Owners[T]
) -> ManagedEntry | None:
    """The managed grant an entry is: its policy and a parameter some tenant grants through,
    whose value (valueReference or valueString, with or without the type, any case) is a
    managed account's id. None: unmanaged."""
    parsed = parse_entry(entry)
    if parsed is None or parsed.policy is None:
        return None
    for param in parsed.parameters:
        if (parsed.policy, param.name) not in names or param.value is None:
            continue
        account_id, grants = parameter_id(param.value)
        found = owners.by_id.get(account_id) if account_id is not None else None
        if found is None:
            continue
        key = AccessKey(parsed.policy, param.name, found[0])
        text = entry if isinstance(entry, str) else json.dumps(entry, sort_keys=True)
        return ManagedEntry(key, grants, _canonical_text(text) == canonical_json(key))
    return None


def canonical_json(key: AccessKey) -> str:
    """The one entry the tool writes for a grant (design section 8), as canonical JSON."""
    return json.dumps(key.entry(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical_text(text: str) -> str:
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)  # fmt: skip
    except ValueError:
        return text


def unsafe_parameters(entry: str | Mapping[str, Any]) -> list[str]:
    """Parameters whose value holds `"` or `\\`: pasted into the policy JSON unescaped, such a
    value locks the member out (the JSON no longer parses) or rewrites the policy."""
    parsed = parse_entry(entry)
    if parsed is None:
        return []
    return [
        p.name
        for p in parsed.parameters
        if any(ch in (v or "") for v in (p.reference, p.string) for ch in UNSAFE)
    ]
