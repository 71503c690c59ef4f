"""What the manifests say: tenants, their selectors and grants, with source locations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    @property
    def short(self) -> str:
        return f"{self.file}:{self.line}"


class SelectorKind(StrEnum):
    ID = "id"
    IDENTIFIER = "identifier"
    SEARCH = "search"


@dataclass(frozen=True, slots=True)
class Selector:
    """`spec.patients[]`: a patient by id, by identifier (exactly one), or a search."""

    kind: SelectorKind
    value: str
    location: Location

    def describe(self) -> str:
        if self.kind is SelectorKind.ID:
            return self.value
        return f"{self.kind.value} {self.value}"

    @property
    def subject(self) -> str:
        """How a resolution error names it (plan/resolve.py)."""
        if self.kind is SelectorKind.SEARCH:
            return f"search {self.value!r}"
        return self.describe()


@dataclass(frozen=True)
class AccountRef:
    """`spec.account`: a literal `Type/id` reference, or an identifier plus resource type."""

    location: Location
    reference: str | None = None
    identifier: str | None = None
    type: str | None = None

    def describe(self) -> str:
        if self.reference is not None:
            return self.reference
        return f"{self.type}?identifier={self.identifier}"

    @property
    def subject(self) -> str:
        if self.reference is not None:
            return f"spec.account: {self.reference}"
        return f"spec.account: {self.type} with identifier {self.identifier}"


@dataclass(frozen=True, slots=True)
class ResourceSelector:
    """`spec.resources[]`: other resources of the tenant (design section 9)."""

    kind: SelectorKind
    type: str  # the resource type every match has
    value: str  # Type/id, system|value, or the query after `Type?`
    location: Location

    def describe(self) -> str:
        if self.kind is SelectorKind.ID:
            return self.value
        if self.kind is SelectorKind.IDENTIFIER:
            return f"{self.type} identifier {self.value}"
        return f"search {self.type}?{self.value}"

    @property
    def subject(self) -> str:
        if self.kind is SelectorKind.SEARCH:
            return f"search {self.type + '?' + self.value!r}"
        return self.describe()


class MemberKind(StrEnum):
    ID = "id"  # ProjectMembership/<id>
    PROFILE = "profile"
    IDENTIFIER = "identifier"
    SEARCH = "search"


@dataclass(frozen=True, slots=True)
class MemberSelector:
    """Which ProjectMemberships a grant names (design section 8)."""

    kind: MemberKind
    value: str
    location: Location

    def describe(self) -> str:
        if self.kind is MemberKind.ID:
            return self.value
        return f"{self.kind.value} {self.value}"

    @property
    def subject(self) -> str:
        if self.kind is MemberKind.SEARCH:
            return f"member search {self.value!r}"
        return f"member {self.describe()}"


@dataclass(frozen=True)
class Grant:
    """`spec.access[]`: these members get the tenant's account through `policy`'s `%parameter`."""

    policy: str  # AccessPolicy/<id>
    parameter: str
    members: tuple[MemberSelector, ...]
    location: Location


class Membership(StrEnum):
    AUTHORITATIVE = "authoritative"
    ADDITIVE = "additive"


@dataclass(frozen=True)
class Tenant:
    name: str
    account: AccountRef
    # A tuple, or from a manifest a PatientSelectors (model/selectors.py): columns, not objects
    patients: Sequence[Selector]
    location: Location
    membership: Membership = Membership.AUTHORITATIVE
    propagate: bool = True
    description: str | None = None
    access: tuple[Grant, ...] = ()
    resources: tuple[ResourceSelector, ...] = ()

    @property
    def resource_types(self) -> frozenset[str]:
        return frozenset(s.type for s in self.resources)

    @property
    def authoritative(self) -> bool:
        return self.membership is Membership.AUTHORITATIVE


@dataclass(frozen=True)
class ManifestSet:
    tenants: tuple[Tenant, ...]
    files: tuple[str, ...]
    digest: str
