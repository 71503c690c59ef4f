"""`reconciler apply`: plan (or load a saved plan), guard, approve, lock, execute, report."""

from __future__ import annotations

import argparse
import hmac
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType

from reconciler.apply.access import AccessReport, AccessWriter
from reconciler.apply.audit import audit_event
from reconciler.apply.executor import Executor, Report
from reconciler.apply.lock import ApplyLock
from reconciler.commands._args import (
    add_target_option,
    parse_duration,
    positive_seconds,
    server_options,
)
from reconciler.commands.progress import Progress
from reconciler.commands.views import View
from reconciler.connect import Connection, ServerOptions, connect, preflight
from reconciler.errors import ApplyRefused, ExitCode, PlanFileError, UsageError
from reconciler.logs import get_logger
from reconciler.manifest import DEFAULT_PATHS, load_manifests, select_targets
from reconciler.medplum.errors import MedplumError
from reconciler.model import (
    AccessChange,
    Change,
    LiveMembership,
    LivePatient,
    LiveState,
    ManifestSet,
    Phase,
    Plan,
)
from reconciler.plan.access import access_rules, desired_entries
from reconciler.plan.access import change_for as access_change_for
from reconciler.plan.build import build_plan
from reconciler.plan.consistency import inconsistencies
from reconciler.plan.estimate import DEFAULT_QUOTA_POINTS
from reconciler.plan.guard import grant_problems, guards_from_counts, removal_problems
from reconciler.plan.jsonform import plan_digest, sign
from reconciler.plan.live_access import read_memberships
from reconciler.plan.live_resources import read_resources
from reconciler.plan.planfile import load_plan, looks_like_plan
from reconciler.plan.planner import (
    change_for,
    desired_accounts,
    desired_resource_accounts,
    managed_accounts,
)
from reconciler.plan.render import iter_text, plural, use_color

log = get_logger("reconciler.apply")

PROMPT = "Do you want to apply these changes to {target}? Only 'yes' will be accepted: "
MAX_STALE_SHOWN = 10


@dataclass(frozen=True)
class Options:
    paths: tuple[str, ...]
    auto_approve: bool
    verify: bool
    job_timeout: float
    json_events: bool
    allow_mass_removal: bool
    max_removals: int | None
    allow_mass_grant: bool
    max_grants: int | None
    lock: bool
    lock_timeout: float
    lock_ttl: float
    audit: bool
    parallelism: int
    server: ServerOptions
    targets: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(
            paths=tuple(ns.paths or DEFAULT_PATHS),
            auto_approve=ns.auto_approve,
            verify=not ns.no_verify,
            job_timeout=ns.job_timeout,
            json_events=ns.format == "json",
            allow_mass_removal=ns.allow_mass_removal,
            max_removals=ns.max_removals,
            allow_mass_grant=ns.allow_mass_grant,
            max_grants=ns.max_grants,
            lock=ns.lock == "true",
            lock_timeout=ns.lock_timeout,
            lock_ttl=ns.lock_ttl,
            audit=not ns.no_audit,
            parallelism=ns.parallelism,
            server=server_options(ns),
            targets=tuple(ns.target),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_option(parser)
    from reconciler.commands._args import non_negative_int

    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="manifests, or one saved plan file"
    )
    parser.add_argument(
        "--auto-approve", "-auto-approve", action="store_true", help="do not ask for 'yes'"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip compartment verification")
    parser.add_argument(
        "--job-timeout",
        type=positive_seconds,
        default=300.0,
        metavar="S",
        help="give up waiting for one async job after S seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: JSON-lines events on stdout for CI (default: text)",
    )
    parser.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="apply even when a tenant would lose over half of its members",
    )
    parser.add_argument(
        "--max-removals",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="refuse when the plan removes more than N accounts in all",
    )
    parser.add_argument(
        "--allow-mass-grant",
        action="store_true",
        help="apply even when the plan grants access to more than 10 memberships",
    )
    parser.add_argument(
        "--max-grants",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="refuse when the plan adds more than N access grants in all",
    )
    parser.add_argument(
        "--lock",
        choices=("true", "false"),
        default="true",
        help="take the server-side apply lock (default: true; false is for emergencies)",
    )
    parser.add_argument(
        "--lock-timeout",
        "-lock-timeout",
        type=parse_duration,
        default=0.0,
        metavar="DURATION",
        help="wait this long for another apply's lock (e.g. 60s; default: fail at once)",
    )
    parser.add_argument(
        "--lock-ttl",
        type=parse_duration,
        default=600.0,
        metavar="DURATION",
        help="lock expiry, renewed while applying (default: 10m)",
    )
    parser.add_argument("--no-audit", action="store_true", help="do not write the AuditEvent")


def _can_ask(options: Options) -> None:
    """Checked before any work: with no terminal to answer on, refuse at once (not after
    reading the server and printing a plan nobody will approve)."""
    if options.auto_approve:
        return
    if sys.stdin is None or not sys.stdin.isatty():  # no stdin at all (closed fd 0) too
        raise ApplyRefused(
            "refusing to apply: stdin is not a terminal and --auto-approve was not given; "
            "nothing was changed"
        )


def _approve(options: Options, view: View, target: str) -> None:
    if options.auto_approve:
        return
    _can_ask(options)
    answer = view.prompt("\n" + PROMPT.format(target=target)).strip()
    if answer != "yes":
        raise ApplyRefused(
            f"apply cancelled (answer was {answer!r}, not 'yes'); nothing was changed"
        )


def _replanner(
    manifests: ManifestSet, live: LiveState, *, resources: bool = False
) -> Callable[[LivePatient], Change | None]:
    managed = managed_accounts(manifests.tenants, live)
    desired = desired_resource_accounts if resources else desired_accounts

    def replan(fresh: LivePatient) -> Change | None:
        after = desired(fresh.reference, fresh.accounts, manifests.tenants, live)
        return change_for(
            fresh.reference,
            fresh.version_id,
            fresh.identifier,
            fresh.accounts,
            after,
            managed,
            propagate=not resources,
        )

    return replan


def _access_replanner(
    manifests: ManifestSet, live: LiveState
) -> Callable[[LiveMembership], AccessChange | None]:
    rules = access_rules(manifests.tenants, live)

    def replan(fresh: LiveMembership) -> AccessChange | None:
        return access_change_for(fresh, desired_entries(fresh, rules), rules)

    return replan


PLAN_KEY = "RECONCILER_PLAN_KEY"


def _check_signature(plan: Plan, path: str) -> None:
    """With RECONCILER_PLAN_KEY, only a plan signed with it is applied; under CI=true a saved
    plan is applied only with the key (anyone who can edit the artifact could re-digest it)."""
    key = os.environ.get(PLAN_KEY)
    if not key:
        if os.environ.get("CI", "").lower() == "true":
            raise PlanFileError(
                f"{path}: applying a saved plan under CI=true needs {PLAN_KEY} (the key the "
                "plan was signed with); nothing was changed"
            )
        return
    expected = sign(plan_digest(plan), key.encode())
    if not plan.signature:
        raise PlanFileError(
            f"{path}: the plan is not signed, and {PLAN_KEY} is set; nothing was changed"
        )
    if not hmac.compare_digest(plan.signature, expected):
        raise PlanFileError(
            f"{path}: the plan's signature does not match {PLAN_KEY}: it was edited, or signed "
            "with another key; nothing was changed"
        )


def _check_consistent(plan: Plan, path: str) -> None:
    problems = inconsistencies(plan)
    if problems:
        shown = problems[:MAX_STALE_SHOWN]
        more = len(problems) - len(shown)
        raise PlanFileError(
            f"{path}: the plan does not hold together, so it was edited: "
            + "; ".join(shown)
            + (f"; and {more} more" if more > 0 else "")
            + "; nothing was changed"
        )


def _recount_guards(conn: Connection, plan: Plan) -> Plan:
    """Re-run the guards of a saved plan on what it will write and the live member counts."""
    members: dict[tuple[str, bool], int] = {}
    resource_types = sorted({c.patient.split("/", 1)[0] for c in plan.resource_changes})
    for account in plan.managed:
        members[(account, False)] = conn.client.count("Patient", [("_compartment", account)])
        members[(account, True)] = sum(
            conn.client.count(t, [("_compartment", account)]) for t in resource_types
        )
    removals, grants = guards_from_counts(plan, members)
    return replace(plan, mass_removals=removals, mass_grants=grants)


def _check_saved_plan(conn: Connection, plan: Plan, path: str) -> None:
    if plan.server != conn.identity:
        raise PlanFileError(
            f"{path}: the plan was made for server {plan.server}, but this run talks to "
            f"{conn.identity}; nothing was changed"
        )
    fresh = read_resources(
        conn.client, [c.patient for c in (*plan.changes, *plan.resource_changes)]
    )
    memberships = read_memberships(conn.client, [c.membership for c in plan.access_changes])
    stale = []
    for access in plan.access_changes:
        moved = memberships.get(access.membership)
        if moved is None:
            stale.append(f"{access.membership} was deleted since the plan")
        elif moved.version_id != access.version_id:
            stale.append(
                f"{access.membership} changed since the plan (version {access.version_id}, "
                f"now {moved.version_id})"
            )
    for change in (*plan.changes, *plan.resource_changes):
        now = fresh.get(change.patient)
        if now is None:
            stale.append(f"{change.patient} was deleted since the plan")
        elif now.version_id != change.version_id:
            stale.append(
                f"{change.patient} changed since the plan (version {change.version_id}, "
                f"now {now.version_id})"
            )
    if stale:
        more = len(stale) - MAX_STALE_SHOWN
        lines = stale[:MAX_STALE_SHOWN] + ([f"... and {more} more"] if more > 0 else [])
        raise PlanFileError(
            "saved plan is stale: " + "\n  ".join(lines) + "\nNothing was changed; run plan again."
        )


def _install_interrupt(executor: Executor, view: View) -> Callable[[], None]:
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        if executor.stop.is_set():
            raise KeyboardInterrupt
        executor.stop.set()
        view.message(
            "\nInterrupted: no new changes will start; waiting for those in flight "
            "(Ctrl-C again to abort)."
        )

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (tests): keep the default behaviour
        return lambda: None

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    return restore


def _report(report: Report, access: AccessReport, view: View, target: str) -> int:
    updated = len(report.succeeded_patients)
    accounts = (
        f"{plural(report.added, 'account')} added, {plural(report.removed, 'account')} removed"
    )
    who = plural(updated, "patient")
    if report.resources_planned:
        who += f" and {plural(len(report.succeeded_resources), 'other resource')}"
    counts = f"{who} updated, {accounts}"
    done = f"{who}, {accounts}"  # the design's "Updated: M patients, …"
    failures = [f"{o.patient}: {o.reason}" for o in report.failed] + report.unrepaired
    failures += [f"{o.membership}: {o.reason}" for o in access.failed]
    access_line = (
        f"Access updated: {plural(access.granted, 'grant')} added, "
        f"{plural(access.revoked, 'grant')} revoked, on "
        f"{plural(len(access.updated), 'membership')}."
    )
    view.event(
        "apply_summary",
        {
            "planned": report.planned,
            "updated": updated,
            "added": report.added,
            "removed": report.removed,
            "failed": len(report.failed),
            "resources_planned": report.resources_planned,
            "resources_updated": len(report.succeeded_resources),
            "skipped": report.skipped,
            "verified": report.verified,
            "stragglers": report.stragglers,
            "repaired": report.repaired,
            "propagated": report.propagated,
            "interrupted": report.interrupted,
            "lock_lost": report.lock_lost,
            "foreign_restored": report.foreign_restored,
            "foreign_dropped": report.foreign_dropped,
            "foreign_unchecked": len(report.foreign_unchecked),
            "memberships_planned": access.planned,
            "memberships_updated": len(access.updated),
            "memberships_failed": len(access.failed),
            "grants": access.granted,
            "revocations": access.revoked,
        },
    )
    view.result()
    view.result(f"Target: {target}")
    if report.lock_lost:
        view.result(
            f"Apply failed: {report.lock_lost}; no new write was started after that. "
            f"{report.not_updated} of {report.planned + report.resources_planned} changes "
            "not made; run plan again."
        )
        view.results(f"  {line}" for line in failures)
        view.result(f"Updated: {done}.")
        if access.planned:
            view.result(access_line)
        return ExitCode.ERROR
    if report.interrupted:
        view.result(
            f"Apply interrupted: {report.not_updated} of {report.planned} patients not updated."
        )
        view.result(f"Updated: {done}.")
        if access.planned:
            view.result(access_line)
        return ExitCode.INTERRUPTED
    if failures:
        parts = []
        if report.failed_patients or not (access.failed or report.failed_resources):
            parts.append(f"{len(report.failed_patients)} of {report.planned} patients")
        if report.failed_resources:
            parts.append(
                f"{len(report.failed_resources)} of {report.resources_planned} other resources"
            )
        if access.failed:
            parts.append(f"{len(access.failed)} of {access.planned} memberships")
        view.result(f"Apply failed: {' and '.join(parts)} not updated.")
        view.results(f"  {line}" for line in failures)
        view.result(f"Updated: {done}.")
        if access.planned:
            view.result(access_line)
        view.results(_foreign_lines(report))
        return ExitCode.ERROR
    view.result(f"Apply complete! {counts}.")
    if access.planned:
        view.result(access_line)
    if report.propagated:
        view.result(f"Propagated to {plural(report.propagated, 'compartment resource')}.")
    if report.verified:
        view.result(
            f"Verified {plural(report.compartment_read, 'compartment resource')}: "
            f"{report.stragglers} stragglers found, {report.repaired} repaired."
        )
    if report.skipped:
        view.result(f"{plural(report.skipped, 'patient')} already matched when re-read; skipped.")
    view.results(_foreign_lines(report))
    return ExitCode.OK


def _foreign_lines(report: Report) -> list[str]:
    """Other writers' changes during the apply: what was made good, and what could not be
    checked (the server's history did not tell) — never silently assumed fine."""
    lines = []
    if report.foreign_restored or report.foreign_dropped:
        lines.append(
            "Kept other writers' changes made during apply: "
            f"{plural(report.foreign_restored, 'unmanaged account')} put back, "
            f"{report.foreign_dropped} taken out again."
        )
    if report.foreign_unchecked:
        lines.append(
            f"Could not check {plural(len(report.foreign_unchecked), 'resource')} for other "
            "writers' changes made during apply; run plan again and look at them:"
        )
        lines += [f"  {line}" for line in report.foreign_unchecked[:10]]
        if len(report.foreign_unchecked) > 10:
            lines.append(f"  ... and {len(report.foreign_unchecked) - 10} more")
    return lines


def _audit(conn: Connection, plan: Plan, report: Report, access: AccessReport) -> None:
    counts = {
        "memberships_updated": len(access.updated),
        "memberships_failed": len(access.failed),
        "grants_added": access.granted,
        "grants_revoked": access.revoked,
        "patients_planned": report.planned,
        "patients_updated": len(report.succeeded_patients),
        "patients_failed": len(report.failed_patients),
        "resources_updated": len(report.succeeded_resources),
        "resources_failed": len(report.failed_resources),
        "patients_skipped": report.skipped,
        "accounts_added": report.added,
        "accounts_removed": report.removed,
        "compartment_repaired": report.repaired,
        "foreign_accounts_restored": report.foreign_restored,
        "foreign_accounts_dropped": report.foreign_dropped,
    }
    success = (
        not report.failed and not report.unrepaired and not report.interrupted and not access.failed
    )
    event = audit_event(
        plan_digest=plan_digest(plan),
        manifests_digest=plan.manifest_digest,
        counts=counts,
        success=success,
        summary="apply complete" if success else "apply failed or interrupted",
    )
    try:
        created = conn.client.create_resource(event)
        log.info("audit record written", audit_event=f"AuditEvent/{created['id']}")
    except MedplumError as exc:
        log.warning("could not write the audit record", error=str(exc))


def _load(
    paths: tuple[str, ...], targets: tuple[str, ...]
) -> tuple[Plan | None, ManifestSet | None]:
    saved = len(paths) == 1 and looks_like_plan(paths[0])
    if not saved and any(looks_like_plan(p) for p in paths):
        raise UsageError("a saved plan must be the only path given to apply")
    if saved:
        if targets:
            raise UsageError("--target goes with manifests; a saved plan records its own")
        plan = load_plan(paths[0])
        _check_signature(plan, paths[0])
        _check_consistent(plan, paths[0])
        return plan, None
    return None, select_targets(load_manifests(paths), targets)


def run(options: Options) -> int:
    view = View(json_events=options.json_events)
    saved_plan, manifests = _load(options.paths, options.targets)
    if saved_plan is None:
        _can_ask(options)
    if options.lock and options.lock_ttl < 2 * options.server.timeout:
        raise UsageError(
            f"--lock-ttl {options.lock_ttl:g}s is too short for --timeout "
            f"{options.server.timeout:g}s: the lock must outlive a write in flight, so give a "
            "TTL of at least twice the request timeout; nothing was read or written"
        )
    with connect(options.server) as conn:
        me = preflight(conn, need_admin="apply")
        replan = resource_replan = None
        access_replan = None
        if saved_plan is not None:
            # Same server, nothing moved since: checked before anything is shown or written.
            _check_saved_plan(conn, saved_plan, options.paths[0])
            plan = _recount_guards(conn, saved_plan)
        else:
            assert manifests is not None
            progress = Progress("reading live state")
            try:
                plan, live = build_plan(
                    conn.client,
                    conn.identity,
                    manifests,
                    quota_points=DEFAULT_QUOTA_POINTS,
                    parallelism=options.parallelism,
                    progress=progress.update,
                    target=conn.target,
                    targets=options.targets,
                )
            finally:
                progress.close()
            replan = _replanner(manifests, live)
            resource_replan = _replanner(manifests, live, resources=True)
            access_replan = _access_replanner(manifests, live)
        color = use_color(sys.stdout.isatty()) and not options.json_events
        if not options.json_events or plan.is_empty:
            view.results(iter_text(plan, color=color))
        if plan.is_empty:
            view.event(
                "apply_summary", {"planned": 0, "updated": 0, "added": 0, "removed": 0, "failed": 0}
            )
            return ExitCode.OK
        problems = removal_problems(
            plan,
            plan.mass_removals,
            allow_mass_removal=options.allow_mass_removal,
            max_removals=options.max_removals,
        )
        if problems:
            raise ApplyRefused(
                "refusing to apply: "
                + "; ".join(problems)
                + " (review the plan; --allow-mass-removal to proceed); nothing was changed"
            )
        problems = grant_problems(
            plan, allow_mass_grant=options.allow_mass_grant, max_grants=options.max_grants
        )
        if problems:
            raise ApplyRefused(
                "refusing to apply: "
                + "; ".join(problems)
                + " (review the plan; --allow-mass-grant to proceed); nothing was changed"
            )
        if saved_plan is None:
            _approve(options, view, conn.target)
        report, access = _execute(
            conn, plan, (replan, resource_replan), access_replan, options, view,
            author=me.profile if me else None,
        )  # fmt: skip
    return _report(report, access, view, conn.target)


def _execute(
    conn: Connection,
    plan: Plan,
    replans: tuple[
        Callable[[LivePatient], Change | None] | None,
        Callable[[LivePatient], Change | None] | None,
    ],
    access_replan: Callable[[LiveMembership], AccessChange | None] | None,
    options: Options,
    view: View,
    *,
    author: str | None,
) -> tuple[Report, AccessReport]:
    lock: ApplyLock | None = None
    if options.lock:
        lock = ApplyLock(
            conn.client,
            plan_digest=plan_digest(plan),
            ttl_s=options.lock_ttl,
            wait_s=options.lock_timeout,
            request_deadline_s=options.server.timeout,
        )
        lock.acquire()
    else:
        log.warning("apply lock disabled (--lock=false): another apply may run at the same time")
    executor: Executor | None = None
    try:
        view.event(
            "apply_start",
            {
                "patients": len(plan.changes),
                "resources": len(plan.resource_changes),
                "add": plan.added,
                "remove": plan.removed,
                "memberships": len(plan.access_changes),
                "grants": plan.grants,
                "revocations": plan.revocations,
                "server": plan.server,
            },
        )
        fence = lock.ensure_held if lock is not None else None
        access = AccessWriter(
            conn.client,
            plan.access_changes,
            replan=access_replan,
            on_event=view.event,
            parallelism=options.parallelism,
            fence=fence,
        )
        executor = Executor(
            conn.client,
            plan.managed,
            parallelism=options.parallelism,
            job_timeout=options.job_timeout,
            verify=options.verify,
            replan=replans[0],
            replan_resource=replans[1],
            fence=fence,
            on_event=view.event,
            author=author,
        )
        restore = _install_interrupt(executor, view)
        progress = Progress("applying", total=len(plan.changes))
        conn.client.pacer.on_wait = lambda delay, _why: progress.update(
            progress.done, waiting=f"for quota, {delay:.0f}s"
        )
        try:
            # Revocations first, then the account changes, then grants: no member ever sees
            # more than its current plus its desired grants (design section 8).
            access.run(Phase.REVOKE)
            report = executor.run(
                plan, lambda done, failed: progress.update(done, failed=failed, waiting="")
            )
            if not executor.stop.is_set():
                access.run(Phase.GRANT)
            access.finish_unstarted("not written: apply was interrupted")
        finally:
            conn.client.pacer.on_wait = None
            progress.close()
            restore()
        if options.audit and (report.outcomes or report.repaired or access.report.outcomes):
            _audit(conn, plan, report, access.report)
    except KeyboardInterrupt:  # a second Ctrl-C: release the lock on the way out, quickly
        if lock is not None:
            note = lock.release(quick=True)
            lock = None
            if note:
                view.message(note)
        raise
    finally:
        if lock is not None:
            gone = executor is not None and executor.server_lost is not None
            note = lock.release(quick=gone)
            if note:
                view.message(note)
    return report, access.report
