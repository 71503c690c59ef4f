"""The plan (Terraform's plans model): changes are data; reasons only explain them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from reconciler.model.accounts import Owners
from reconciler.model.live import AccessKey, type_of
from reconciler.model.manifest import Membership


class Action(StrEnum):
    ADD = "+"
    REMOVE = "-"
    UPDATE = "~"
    KEEP = " "


@dataclass(frozen=True, slots=True)
class Step:
    accounts: tuple[str, ...]
    propagate: bool

    def to_json(self) -> dict[str, object]:
        return {"accounts": list(self.accounts), "propagate": self.propagate}


@dataclass(frozen=True, slots=True)
class Change:
    """One resource's account change; `ref` is a Patient or any other resource."""

    ref: str
    version_id: str
    identifier: str | None
    before: tuple[str, ...]
    after: tuple[str, ...]
    add: tuple[str, ...]
    remove: tuple[str, ...]
    tenants: tuple[str, ...]
    steps: tuple[Step, ...]

    @property
    def type(self) -> str:
        return type_of(self.ref)

    @property
    def is_patient(self) -> bool:
        return self.type == "Patient"

    @property
    def primary_changes(self) -> bool:
        """Medplum keeps meta.account equal to the first account: say when it moves."""
        first_before = self.before[0] if self.before else None
        first_after = self.after[0] if self.after else None
        return first_before != first_after


@dataclass(frozen=True, slots=True)
class AccessItem:
    """One grant or revocation, as the plan lists it."""

    policy: str
    parameter: str
    account: str
    tenant: str

    @property
    def key(self) -> AccessKey:
        return AccessKey(self.policy, self.parameter, self.account)

    def to_json(self) -> dict[str, str]:
        return {
            "policy": self.policy,
            "parameter": self.parameter,
            "account": self.account,
            "tenant": self.tenant,
        }


class Phase(StrEnum):
    """When a membership write runs: revocations before any account change, grants after."""

    REVOKE = "revoke"
    GRANT = "grant"


@dataclass(frozen=True, slots=True)
class AccessStep:
    access: tuple[str, ...]  # the whole `access` list to write, canonical JSON entries
    phase: Phase

    def to_json(self) -> dict[str, Any]:
        return {"access": [json.loads(e) for e in self.access], "phase": self.phase.value}


@dataclass(frozen=True, slots=True)
class AccessChange:
    membership: str
    version_id: str
    profile: str | None
    display: str | None
    before: tuple[str, ...]
    after: tuple[str, ...]
    grant: tuple[AccessItem, ...]
    revoke: tuple[AccessItem, ...]
    steps: tuple[AccessStep, ...]


@dataclass(frozen=True)
class AccountInfo:
    """Why an account is in a plan: which tenant manages it (None = unmanaged)."""

    tenant: str
    membership: Membership
    propagate: bool


@dataclass(frozen=True)
class MassRemoval:
    tenant: str
    remove: int
    members: int
    what: str = "members"  # or "other resources" (design section 9)

    def describe(self) -> str:
        share = 100 * self.remove / self.members if self.members else 100.0
        return (
            f"tenant {self.tenant!r} would lose {self.remove:,} of its {self.members:,} current "
            f"{self.what} ({share:.0f} %)"
        )

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "tenant": self.tenant,
            "remove": self.remove,
            "members": self.members,
        }
        if self.what != "members":
            data["what"] = self.what
        return data


@dataclass(frozen=True)
class MassGrant:
    """A tenant's account added to many more patients than it has: the mirror of a removal."""

    tenant: str
    add: int
    members: int
    what: str = "patients"  # or "other resources" (design section 9)

    def describe(self) -> str:
        share = f"{100 * self.add / self.members:.0f} %" if self.members else "it has none yet"
        return (
            f"tenant {self.tenant!r} would gain {self.add:,} {self.what} over its "
            f"{self.members:,} current members ({share})"
        )

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"tenant": self.tenant, "add": self.add, "members": self.members}
        if self.what != "patients":
            data["what"] = self.what
        return data


@dataclass(frozen=True)
class Estimate:
    """What an apply will cost in Medplum's FHIR quota (plan/estimate.py)."""

    writes: int
    patient_writes: int
    compartment_writes: int
    quota_points: int
    assumed_points_per_minute: int
    minutes: float
    sync_calls: int = 0  # propagating calls apply sends synchronously
    async_calls: int = 0  # … and through async jobs
    overhead_points: int = 0  # apply's reads, journal, lock and audit beside the calls

    def to_json(self) -> dict[str, object]:
        return {
            "writes": self.writes,
            "patient_writes": self.patient_writes,
            "compartment_writes": self.compartment_writes,
            "quota_points": self.quota_points,
            "assumed_points_per_minute": self.assumed_points_per_minute,
            "minutes": self.minutes,
            "sync_calls": self.sync_calls,
            "async_calls": self.async_calls,
            "overhead_points": self.overhead_points,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Estimate:
        return cls(
            writes=int(data["writes"]),
            patient_writes=int(data["patient_writes"]),
            compartment_writes=int(data["compartment_writes"]),
            quota_points=int(data["quota_points"]),
            assumed_points_per_minute=int(data["assumed_points_per_minute"]),
            minutes=float(data["minutes"]),
            sync_calls=int(data.get("sync_calls", 0)),
            async_calls=int(data.get("async_calls", 0)),
            overhead_points=int(data.get("overhead_points", 0)),
        )


@dataclass(frozen=True)
class KnownSizes:
    """Compartment sizes apply's own plan read (patient reference → resources), and when
    (`time.monotonic()`): the writes use them while they are fresh instead of asking again
    batch by batch (apply/calls.py). Never written to a plan file: a saved plan is applied
    later, its batches sized as they are written."""

    sizes: dict[str, int]
    read_at: float


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    managed: dict[str, AccountInfo] = field(default_factory=dict)
    server: str = ""
    created_at: str = ""
    manifest_files: tuple[str, ...] = ()
    manifest_digest: str = ""
    warnings: tuple[str, ...] = ()
    mass_removals: tuple[MassRemoval, ...] = ()
    mass_grants: tuple[MassGrant, ...] = ()
    estimate: Estimate | None = None
    access_changes: tuple[AccessChange, ...] = ()
    managed_access: tuple[AccessKey, ...] = ()  # every (policy, parameter, account) managed
    target: str = ""  # the server (and client) people are shown: "Target: …"
    # Other resources (design section 9): the same shape as patient changes.
    resource_changes: tuple[Change, ...] = ()
    signature: str = ""  # a saved plan's HMAC over its digest (RECONCILER_PLAN_KEY), if signed
    targets: tuple[str, ...] = ()  # --target: only these tenants were planned
    known_sizes: KnownSizes | None = field(default=None, compare=False, repr=False)

    @property
    def is_empty(self) -> bool:
        return not self.changes and not self.access_changes and not self.resource_changes

    @cached_property
    def owners(self) -> Owners[AccountInfo]:
        """Managed accounts by id: an alias entry finds its tenant here (model/accounts.py)."""
        return Owners.of(self.managed)

    @property
    def resources_added(self) -> int:
        return sum(len(c.add) for c in self.resource_changes)

    @property
    def resources_removed(self) -> int:
        return sum(len(c.remove) for c in self.resource_changes)

    @property
    def grants(self) -> int:
        return sum(len(c.grant) for c in self.access_changes)

    @property
    def revocations(self) -> int:
        return sum(len(c.revoke) for c in self.access_changes)

    @property
    def added(self) -> int:
        """Accounts added, patients and other resources together."""
        return sum(len(c.add) for c in self.changes) + self.resources_added

    @property
    def removed(self) -> int:
        return sum(len(c.remove) for c in self.changes) + self.resources_removed


DEFAULT_PARALLELISM = 10  # --parallelism's default; the estimate counts apply's batches at it


def apply_batches(changes: int, parallelism: int, size: int | None = None) -> list[int]:
    """How apply cuts `changes` into batches (each re-read, sized, journaled and its lock
    confirmed before it is written): a first small one of 3 x parallelism so the writes start
    early — three calls a worker, about as long as the next batch takes to prepare, so the
    workers do not wait at the first boundary (with 2 they did, ~30 ms, measured) — then
    max(100, 10 x parallelism). The executor cuts by it and the estimate counts the batches'
    reads and writes by it. `size` replaces the full batches' size (tests)."""
    if changes <= 0:
        return []
    first = min(changes, max(1, 3 * parallelism))
    size = size or max(100, 10 * parallelism)
    rest = changes - first
    return [first, *([size] * (rest // size)), *([rest % size] if rest % size else [])]
