"""`reconciler verify` as data: the compartment check of every patient in scope, the orphans
(resources a tenant's staff can read that no manifest gives the tenant), and with `access` the
effective-access proof. With repair, it writes with the same safety as apply: under the apply
lock (every write fenced), after the removal and grant guards, revocations before grants, and
with an AuditEvent — and always toward the manifests: a patient whose own accounts differ from
them is reported for `reconciler apply`, and its compartment is left alone."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from reconciler.apply.access import AccessWriter
from reconciler.apply.afterwards import is_managed
from reconciler.apply.audit import audit_event
from reconciler.apply.authority import Authority
from reconciler.apply.journal import Unfinished, recover, unfinished
from reconciler.apply.lock import ApplyLock, current_lock
from reconciler.apply.report import Recovered
from reconciler.apply.verify import (
    Straggler,
    expectations_for_live,
    find_orphans,
    find_stragglers,
    repair,
)
from reconciler.apply.verify_access import AccessCheck, Mismatch, check_access
from reconciler.errors import ApplyRefused, LockLost, PlanError
from reconciler.logs import get_logger
from reconciler.medplum.accounts import entry_for
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import MedplumError
from reconciler.model import (
    AccessChange,
    AccountInfo,
    Change,
    LiveState,
    ManifestSet,
    Owners,
    Phase,
)
from reconciler.plan.access import plan_access
from reconciler.plan.guard import repair_problems
from reconciler.plan.live import read_live_state
from reconciler.plan.planner import managed_accounts
from reconciler.plan.planner import plan as compute_plan

log = get_logger("reconciler.apply.verify")


@dataclass(frozen=True)
class RepairOptions:
    allow_mass_grant: bool = False
    allow_mass_removal: bool = False
    lock: bool = True
    lock_ttl: float = 600.0
    lock_timeout: float = 0.0
    request_deadline: float = 30.0
    audit: bool = True
    job_timeout: float = 300.0


@dataclass
class CompartmentCheck:
    patients: int
    read: int
    stragglers: list[Straggler]
    orphans: list[Straggler] = field(default_factory=list)
    drifted: list[Change] = field(default_factory=list)  # own accounts differ: run apply
    managed: dict[str, AccountInfo] = field(default_factory=dict)
    unfinished: list[Unfinished] = field(default_factory=list)  # applies that did not finish
    recovered: list[Recovered] = field(default_factory=list)  # … whose writes repair checked
    repaired: int | None = None  # None: no repair was asked for
    repair_errors: list[tuple[Straggler, str]] = field(default_factory=list)

    @property
    def to_repair(self) -> list[Straggler]:
        return [*self.stragglers, *self.orphans]


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
        if check.repaired is not None and check.repaired != len(check.to_repair):
            return True
        return self.access_repair is not None and bool(self.access_repair.failed)

    @property
    def drift(self) -> bool:
        """Something is still out of step after whatever repair ran."""
        check = self.compartments
        if check.drifted or (check.to_repair and check.repaired is None):
            return True
        if check.unfinished and not check.recovered:
            return True
        if any(r.unchecked for r in check.recovered):
            return True
        if self.access_repair is not None:
            return bool(self.access_repair.still)
        return self.access is not None and bool(self.access.mismatches)


def _resource_orphans(
    changes: Sequence[Change], live: LiveState
) -> tuple[list[Straggler], list[Change]]:
    """Other resources an authoritative tenant does not select but which carry its account
    (orphans: the repair takes the account away), and changes that add (for apply)."""
    orphans, drifted = [], []
    for change in changes:
        if change.remove:
            want = tuple(a for a in change.before if a not in change.remove)
            held = live.resources[change.ref]
            originals = {k: json.loads(e) for k, e in held.originals}
            entries = tuple(entry_for(k, originals) for k in want)
            orphans.append(Straggler(change.ref, "", change.before, want, entries, orphan=True))
        if change.add:
            drifted.append(change)
    return orphans, drifted


def verify(
    client: MedplumClient,
    manifests: ManifestSet,
    *,
    repair_with: RepairOptions | None,
    access: bool,
    parallelism: int,
) -> Verification:
    tenants = manifests.tenants
    live = read_live_state(client, tenants, parallelism=parallelism)
    managed = managed_accounts(tenants, live)
    planned = compute_plan(tenants, live)
    orphans, drifted = _resource_orphans(planned.resource_changes, live)
    drifted = [*planned.changes, *drifted]
    left_alone = [c.ref for c in planned.changes]
    stragglers, read = find_stragglers(
        client, expectations_for_live(live, managed, skip=left_alone)
    )
    compartment_orphans, carrying = find_orphans(client, managed, live.patients)
    check = CompartmentCheck(
        len(live.patients), read, stragglers, [*compartment_orphans, *orphans], drifted, managed
    )
    check.unfinished = _unfinished(client)
    result = Verification(check)
    drift: list[AccessChange] = []
    if access:
        found = plan_access(tenants, live)
        if found.problems:
            raise PlanError(found.problems)
        drift = found.changes
        result.access = check_access(client, tenants, live, drift, parallelism=parallelism)
    if repair_with is None or not (check.to_repair or drift or check.unfinished):
        return result
    _guard(check, carrying, drift, repair_with)
    lock = None
    if repair_with.lock:
        lock = ApplyLock(
            client,
            plan_digest=f"verify-repair {manifests.digest}",
            ttl_s=repair_with.lock_ttl,
            wait_s=repair_with.lock_timeout,
            request_deadline_s=repair_with.request_deadline,
        )
        lock.acquire()
    authority = Authority(lock)
    try:
        with authority.installed(client):  # every repair write passes the lock's gate
            if check.unfinished and lock is not None:  # first: what a dead apply overwrote
                check.recovered = recover(
                    client, authority, is_managed(managed), own_run=lock.run_id,
                    parallelism=parallelism, job_timeout=repair_with.job_timeout,
                )  # fmt: skip
            _repair(client, check, drift, result, authority, parallelism)
        if repair_with.audit:
            _audit(client, manifests, result, authority.lost)
    finally:
        if lock is not None:
            note = lock.release()
            if note:
                log.warning("apply lock", note=note)
    if authority.lost:
        raise LockLost(authority.lost)
    if result.access_repair is not None and not result.access_repair.failed:
        fresh = read_live_state(client, tenants, parallelism=parallelism)
        again = check_access(
            client, tenants, fresh, plan_access(tenants, fresh).changes, parallelism=parallelism
        )
        result.access_repair.still = again.mismatches
    return result


def _unfinished(client: MedplumClient) -> list[Unfinished]:
    """Journals of applies that did not finish — not those of an apply running now."""
    lock = current_lock(client)
    running = lock.info.run if lock is not None and lock.live else None
    return [u for u in unfinished(client, own_run=running or "", done_by=None)]


def _repair(
    client: MedplumClient,
    check: CompartmentCheck,
    drift: Sequence[AccessChange],
    result: Verification,
    authority: Authority,
    parallelism: int,
) -> None:
    """Revocations first, then the compartments, then grants — as apply orders them."""
    writer = AccessWriter(client, drift, parallelism=parallelism, authority=authority)
    writer.run(Phase.REVOKE)
    errors = check.repair_errors
    if writer.lock_lost is None:
        try:
            authority.confirm()
            check.repaired = repair(
                client,
                check.to_repair,
                parallelism=parallelism,
                on_error=lambda s, reason: errors.append((s, reason)),
            )
        except LockLost:
            check.repaired = 0
    writer.run(Phase.GRANT)
    if drift:
        report = writer.report
        result.access_repair = AccessRepair(
            report.planned,
            len(report.updated),
            report.granted,
            report.revoked,
            [(o.membership, o.reason) for o in report.failed],
            [],
        )


def _guard(
    check: CompartmentCheck,
    carrying: dict[str, int],
    drift: Sequence[AccessChange],
    options: RepairOptions,
) -> None:
    owners = Owners.of(check.managed)
    added: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    for item in check.to_repair:
        for account in item.added(owners):
            added[check.managed[str(owners.canonical(account))].tenant] += 1
        for account in item.removed(owners):
            removed[check.managed[account].tenant] += 1
    current = {check.managed[a].tenant: n for a, n in carrying.items()}
    granted = sum(1 for c in drift if c.grant)
    problems = repair_problems(
        added,
        removed,
        current,
        granted,
        allow_mass_grant=options.allow_mass_grant,
        allow_mass_removal=options.allow_mass_removal,
    )
    if problems:
        raise ApplyRefused("refusing to repair: " + "; ".join(problems) + "; nothing was changed")


def _audit(
    client: MedplumClient, manifests: ManifestSet, result: Verification, lost: str | None
) -> None:
    check = result.compartments
    repaired = result.access_repair
    counts = {
        "compartment_repaired": check.repaired or 0,
        "compartment_failed": len(check.repair_errors),
        "orphans": len(check.orphans),
        "memberships_updated": repaired.updated if repaired else 0,
        "memberships_failed": len(repaired.failed) if repaired else 0,
        "grants_added": repaired.granted if repaired else 0,
        "grants_revoked": repaired.revoked if repaired else 0,
    }
    success = not result.repair_failed and lost is None
    event = audit_event(
        plan_digest="",
        manifests_digest=manifests.digest,
        counts=counts,
        success=success,
        summary="verify repair complete"
        if success
        else f"verify repair failed{': ' + lost if lost else ''}",
        action="verify-repair",
    )
    try:
        created = client.create_resource(event)
        log.info("audit record written", audit_event=f"AuditEvent/{created['id']}")
    except MedplumError as exc:
        log.warning("could not write the audit record", error=str(exc))
