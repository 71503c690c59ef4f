"""What apply tells its view while it runs, as typed records (Terraform's views: the packages
emit events, a view per format turns them into lines or JSON). Events come from worker
threads; a view serialises its own writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reconciler.model import AccessItem, Plan, type_of


@dataclass(frozen=True)
class ApplyStarted:
    patients: int
    resources: int
    add: int
    remove: int
    memberships: int
    grants: int
    revocations: int
    server: str

    @classmethod
    def of(cls, plan: Plan) -> ApplyStarted:
        return cls(
            patients=len(plan.changes),
            resources=len(plan.resource_changes),
            add=plan.added,
            remove=plan.removed,
            memberships=len(plan.access_changes),
            grants=plan.grants,
            revocations=plan.revocations,
            server=plan.server,
        )


@dataclass(frozen=True)
class ChangeFinished:
    """One patient's or other resource's change: written (ok) or failed with `error`."""

    ref: str
    ok: bool
    add: tuple[str, ...]
    remove: tuple[str, ...]
    duration_ms: int
    error: str = ""

    @property
    def is_patient(self) -> bool:
        return type_of(self.ref) == "Patient"


@dataclass(frozen=True)
class ChangeCorrected:
    """Another writer's unmanaged account change that a write of ours overwrote, made good."""

    ref: str
    restored: tuple[str, ...]
    dropped: tuple[str, ...]

    @property
    def is_patient(self) -> bool:
        return type_of(self.ref) == "Patient"


@dataclass(frozen=True)
class MembershipFinished:
    membership: str
    ok: bool
    grant: tuple[AccessItem, ...]
    revoke: tuple[AccessItem, ...]
    error: str = ""


Event = ApplyStarted | ChangeFinished | ChangeCorrected | MembershipFinished
EventSink = Callable[[Event], None]


def ignore(event: Event) -> None:
    return None
