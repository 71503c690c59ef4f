"""The one parser of `ProjectMembership.access` entries: `{"policy": {"reference": P},
"parameter": [{"name": N, "valueReference": {"reference": R}} | {"name": N, "valueString": S}]}`
(medplum-api.md, "Tenant access"). The planner, the renderers, the consistency check and
`import` all read entries through it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class EntryParameter:
    name: str
    reference: str | None = None  # valueReference.reference
    string: str | None = None  # valueString

    @property
    def value(self) -> str | None:
        """What the policy's `%name` becomes (the reference, else the string)."""
        return self.reference if self.reference is not None else self.string


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
