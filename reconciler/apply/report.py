"""What an apply did: one Outcome per change, and the counts a view and the audit record use."""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.model import Change


@dataclass(frozen=True)
class Outcome:
    change: Change
    ok: bool
    reason: str = ""
    job: str | None = None
    duration_ms: int = 0
    propagated: int = 0  # compartment resources the server reports it updated

    @property
    def ref(self) -> str:
        return self.change.ref

    @property
    def is_patient(self) -> bool:
        return self.change.is_patient


@dataclass(frozen=True)
class Recovered:
    """The other-writers check of a run that did not finish (its crash journal)."""

    run: str  # who and since when
    restored: int
    dropped: int
    unchecked: list[str]


@dataclass
class Report:
    planned: int  # patients
    resources_planned: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: int = 0  # re-planned to no change (someone else already made it)
    verified: bool = False
    compartment_read: int = 0
    stragglers: int = 0
    repaired: int = 0
    unrepaired: list[str] = field(default_factory=list)  # "Type/id (Patient/p): reason"
    interrupted: bool = False
    lock_lost: str | None = None
    # Other writers' unmanaged account changes that a write of ours overwrote, made good again.
    foreign_restored: int = 0  # accounts put back
    foreign_dropped: int = 0  # accounts taken out again
    foreign_unchecked: list[str] = field(default_factory=list)  # "Type/id: why not checked"
    recovered: list[Recovered] = field(default_factory=list)  # runs that did not finish
    # The FHIR quota: how the propagating calls went, and points estimated against seen spent.
    sync_calls: int = 0
    async_calls: int = 0
    points_estimated: int | None = None
    points_spent: int | None = None  # as the RateLimit headers showed it (None: no header)

    @property
    def succeeded(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def succeeded_patients(self) -> list[Outcome]:
        return [o for o in self.succeeded if o.is_patient]

    @property
    def succeeded_resources(self) -> list[Outcome]:
        return [o for o in self.succeeded if not o.is_patient]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def failed_patients(self) -> list[Outcome]:
        return [o for o in self.failed if o.is_patient]

    @property
    def failed_resources(self) -> list[Outcome]:
        return [o for o in self.failed if not o.is_patient]

    @property
    def propagated(self) -> int:
        return sum(o.propagated for o in self.succeeded)

    @property
    def added(self) -> int:
        return sum(len(o.change.add) for o in self.succeeded)

    @property
    def removed(self) -> int:
        return sum(len(o.change.remove) for o in self.succeeded)

    @property
    def not_updated(self) -> int:
        return self.planned + self.resources_planned - len(self.succeeded) - self.skipped
