"""What the server holds, as the planner sees it: resources with their accounts, memberships
with their access entries, and what the selectors resolved to (read by plan/live.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def type_of(ref: str) -> str:
    """The resource type of a `Type/id` reference: the one place it is read off."""
    return ref.partition("/")[0]


class LiveResource:
    """A patient or any other resource whose accounts the tool manages.

    A plan over a million patients holds a million of these: the version and the first
    identifier are kept as one string (`version` NEWLINE `identifier`; a FHIR versionId never
    holds a newline, and one that does is kept apart), one string header less a patient."""

    __slots__ = ("_packed", "accounts", "originals", "ref")

    ref: str  # "Type/<id>"
    accounts: tuple[str, ...]
    # Account entries that are more than a plain reference (a display, an identifier-only
    # Reference): key -> original entry as JSON, written back as they were.
    originals: tuple[tuple[str, str], ...]
    _packed: str | tuple[str, str | None]

    def __init__(
        self,
        ref: str,
        version_id: str,
        accounts: tuple[str, ...],
        identifier: str | None = None,  # first identifier as system|value
        originals: tuple[tuple[str, str], ...] = (),
    ) -> None:
        set_ = object.__setattr__
        set_(self, "ref", ref)
        set_(self, "accounts", accounts)
        set_(self, "originals", originals)
        if "\n" in version_id:
            set_(self, "_packed", (version_id, identifier))
        elif identifier is None:
            set_(self, "_packed", version_id)
        else:
            set_(self, "_packed", f"{version_id}\n{identifier}")

    @property
    def version_id(self) -> str:
        packed = self._packed
        return packed[0] if isinstance(packed, tuple) else packed.partition("\n")[0]

    @property
    def identifier(self) -> str | None:
        packed = self._packed
        if isinstance(packed, tuple):
            return packed[1]
        _, newline, identifier = packed.partition("\n")
        return identifier if newline else None

    def _key(self) -> tuple[object, ...]:
        return (self.ref, self.version_id, self.accounts, self.identifier, self.originals)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LiveResource):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"LiveResource is immutable ({name})")

    def __repr__(self) -> str:
        return (
            f"LiveResource(ref={self.ref!r}, version_id={self.version_id!r}, "
            f"accounts={self.accounts!r}, identifier={self.identifier!r}, "
            f"originals={self.originals!r})"
        )

    @property
    def type(self) -> str:
        return type_of(self.ref)

    @property
    def is_patient(self) -> bool:
        return self.type == "Patient"


def entry_json(entry: dict[str, Any]) -> str:
    """A `ProjectMembership.access` entry as canonical JSON: hashable, and written back as is."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True, order=True)
class AccessKey:
    """A managed access entry: `policy` with `parameter` = the tenant's `account`."""

    policy: str
    parameter: str
    account: str

    def entry(self) -> dict[str, Any]:
        return {
            "policy": {"reference": self.policy},
            "parameter": [{"name": self.parameter, "valueReference": {"reference": self.account}}],
        }

    def describe(self) -> str:
        return f"{self.policy}  {self.parameter}={self.account}"


@dataclass(frozen=True, slots=True)
class LiveMembership:
    reference: str  # "ProjectMembership/<id>"
    version_id: str
    entries: tuple[str, ...]  # live `access` entries, canonical JSON, in order
    has_access_policy: bool = False  # the legacy single `accessPolicy` field is set
    admin: bool = False
    profile: str | None = None
    display: str | None = None
    access_policy: str | None = None  # the legacy `accessPolicy`'s reference, when it has one
    user: str | None = None  # the user's name, where the server shows one (`user.display`)

    @property
    def unrestricted(self) -> bool:
        """Neither `access` nor `accessPolicy`: Medplum lets it see everything."""
        return not self.entries and not self.has_access_policy


@dataclass(frozen=True)
class LiveState:
    accounts: dict[str, str]  # tenant name -> resolved account reference
    members: dict[str, frozenset[str]]  # tenant name -> patient references its selectors hit
    patients: dict[str, LiveResource]  # every patient in scope
    memberships: dict[str, LiveMembership] = field(default_factory=dict)  # in access scope
    # Other resources (design section 9): every resource in scope, and each tenant's members.
    resources: dict[str, LiveResource] = field(default_factory=dict)
    resource_members: dict[str, frozenset[str]] = field(default_factory=dict)
    # (tenant name, index of the grant in spec.access) -> memberships its members resolve to
    grant_members: dict[tuple[str, int], frozenset[str]] = field(default_factory=dict)
