"""`reconciler verify` as data: the compartment check (and its repair) of every patient in
scope, and with `access` the effective-access proof (and its repair). Views word the result;
the command picks the exit code from it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from reconciler.apply.access import AccessWriter
from reconciler.apply.verify import Straggler, expectations_for_live, find_stragglers, repair
from reconciler.apply.verify_access import AccessCheck, Mismatch, check_access
from reconciler.errors import PlanError
from reconciler.medplum.client import MedplumClient
from reconciler.model import Phase, Tenant
from reconciler.plan.access import plan_access
from reconciler.plan.live import read_live_state
from reconciler.plan.planner import managed_accounts


@dataclass
class CompartmentCheck:
    patients: int
    read: int
    stragglers: list[Straggler]
    repaired: int | None = None  # None: no repair was asked for
    repair_errors: list[tuple[Straggler, str]] = field(default_factory=list)


@dataclass
class AccessRepair:
    planned: int
    updated: int
    granted: int
    revoked: int
    failed: list[tuple[str, str]]  # (membership, reason)
    still: list[Mismatch]  # mismatches found again after the repair


@dataclass
class Verification:
    compartments: CompartmentCheck
    access: AccessCheck | None = None
    access_repair: AccessRepair | None = None

    @property
    def repair_failed(self) -> bool:
        check = self.compartments
        if check.repaired is not None and check.repaired != len(check.stragglers):
            return True
        return self.access_repair is not None and bool(self.access_repair.failed)

    @property
    def drift(self) -> bool:
        """Something is still out of step after whatever repair ran."""
        if self.compartments.stragglers and self.compartments.repaired is None:
            return True
        if self.access_repair is not None:
            return bool(self.access_repair.still)
        return self.access is not None and bool(self.access.mismatches)


def verify(
    client: MedplumClient,
    tenants: Sequence[Tenant],
    *,
    repair_drift: bool,
    access: bool,
    parallelism: int,
) -> Verification:
    live = read_live_state(client, tenants, parallelism=parallelism)
    expectations = expectations_for_live(live, managed_accounts(tenants, live))
    stragglers, read = find_stragglers(client, expectations)
    result = Verification(CompartmentCheck(len(live.patients), read, stragglers))
    if stragglers and repair_drift:
        errors = result.compartments.repair_errors
        result.compartments.repaired = repair(
            client,
            stragglers,
            parallelism=parallelism,
            on_error=lambda s, reason: errors.append((s, reason)),
        )
    if not access:
        return result
    drift = plan_access(tenants, live)
    if drift.problems:
        raise PlanError(drift.problems)
    result.access = check_access(client, tenants, live, drift.changes, parallelism=parallelism)
    if not repair_drift or not drift.changes:
        return result
    writer = AccessWriter(client, drift.changes, parallelism=parallelism)
    writer.run(Phase.REVOKE)
    writer.run(Phase.GRANT)
    report = writer.report
    result.access_repair = AccessRepair(
        report.planned,
        len(report.updated),
        report.granted,
        report.revoked,
        [(o.membership, o.reason) for o in report.failed],
        [],
    )
    if report.failed:
        return result
    fresh = read_live_state(client, tenants, parallelism=parallelism)
    after = check_access(
        client, tenants, fresh, plan_access(tenants, fresh).changes, parallelism=parallelism
    )
    result.access_repair.still = after.mismatches
    return result
