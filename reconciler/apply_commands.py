"""`reconciler apply` and `reconciler verify`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from reconciler.audit import audit_event
from reconciler.connect import Connection, connect_options
from reconciler.errors import ApplyRefused, PlanFileError, UsageError
from reconciler.estimate import DEFAULT_QUOTA_POINTS
from reconciler.executor import Executor, Report
from reconciler.guard import removal_problems
from reconciler.live import read_live_state, read_patients
from reconciler.lock import ApplyLock, force_unlock
from reconciler.logs import get_logger
from reconciler.manifest import DEFAULT_PATHS, load_manifests
from reconciler.medplum.errors import MedplumError
from reconciler.model import Change, LivePatient, LiveState, ManifestSet, Plan
from reconciler.planfile import load_plan, looks_like_plan
from reconciler.planjson import plan_digest
from reconciler.planner import change_for, desired_accounts, managed_accounts
from reconciler.planning import build_plan
from reconciler.progress import Progress
from reconciler.render import plural, render_text, use_color
from reconciler.verify import Expectation, find_stragglers, repair

log = get_logger("reconciler.apply")

PROMPT = "Do you want to apply these changes? Only 'yes' will be accepted: "
MAX_STALE_SHOWN = 10


class _Out:
    """Results to stdout, or (with --format json) JSON lines on stdout and text on stderr."""

    def __init__(self, json_events: bool) -> None:
        self.json_events = json_events

    def text(self, line: str = "") -> None:
        print(line, file=sys.stderr if self.json_events else sys.stdout, flush=True)

    def event(self, name: str, data: dict[str, Any]) -> None:
        if self.json_events:
            print(json.dumps({"event": name, **data}), flush=True)


def _approve(options: argparse.Namespace, out: _Out) -> None:
    if options.auto_approve:
        return
    if sys.stdin is None or not sys.stdin.isatty():  # no stdin at all (closed fd 0) too
        raise ApplyRefused(
            "refusing to apply: stdin is not a terminal and --auto-approve was not given; "
            "nothing was changed"
        )
    sys.stderr.write("\n" + PROMPT)
    sys.stderr.flush()
    answer = sys.stdin.readline().strip()
    if answer != "yes":
        raise ApplyRefused(
            f"apply cancelled (answer was {answer!r}, not 'yes'); nothing was changed"
        )


def _replanner(manifests: ManifestSet, live: LiveState) -> Callable[[LivePatient], Change | None]:
    managed = managed_accounts(manifests.tenants, live)

    def replan(fresh: LivePatient) -> Change | None:
        after = desired_accounts(fresh.reference, fresh.accounts, manifests.tenants, live)
        return change_for(
            fresh.reference, fresh.version_id, fresh.identifier, fresh.accounts, after, managed
        )

    return replan


def _check_saved_plan(conn: Connection, plan: Plan, path: str) -> None:
    if plan.server != conn.identity:
        raise PlanFileError(
            f"{path}: the plan was made for server {plan.server}, but this run talks to "
            f"{conn.identity}; nothing was changed"
        )
    fresh = read_patients(conn.client, [c.patient for c in plan.changes])
    stale = []
    for change in plan.changes:
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


def _install_interrupt(executor: Executor) -> Callable[[], None]:
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        if executor.stop.is_set():
            raise KeyboardInterrupt
        executor.stop.set()
        sys.stderr.write(
            "\nInterrupted: no new changes will start; waiting for those in flight "
            "(Ctrl-C again to abort).\n"
        )

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (tests): keep the default behaviour
        return lambda: None

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    return restore


def _report(report: Report, out: _Out) -> int:
    updated = len(report.succeeded)
    accounts = (
        f"{plural(report.added, 'account')} added, {plural(report.removed, 'account')} removed"
    )
    counts = f"{plural(updated, 'patient')} updated, {accounts}"
    done = f"{plural(updated, 'patient')}, {accounts}"  # the design's "Updated: M patients, …"
    failures = [f"{o.patient}: {o.reason}" for o in report.failed] + report.unrepaired
    out.event(
        "apply_summary",
        {
            "planned": report.planned,
            "updated": updated,
            "added": report.added,
            "removed": report.removed,
            "failed": len(report.failed),
            "skipped": report.skipped,
            "verified": report.verified,
            "stragglers": report.stragglers,
            "repaired": report.repaired,
            "propagated": report.propagated,
            "interrupted": report.interrupted,
        },
    )
    out.text()
    if report.interrupted:
        out.text(
            f"Apply interrupted: {report.not_updated} of {report.planned} patients not updated."
        )
        out.text(f"Updated: {done}.")
        return 130
    if failures:
        not_updated = len(report.failed)
        out.text(f"Apply failed: {not_updated} of {report.planned} patients not updated.")
        for line in failures:
            out.text(f"  {line}")
        out.text(f"Updated: {done}.")
        return 1
    out.text(f"Apply complete! {counts}.")
    if report.propagated:
        out.text(f"Propagated to {plural(report.propagated, 'compartment resource')}.")
    if report.verified:
        out.text(
            f"Verified {plural(report.compartment_read, 'compartment resource')}: "
            f"{report.stragglers} stragglers found, {report.repaired} repaired."
        )
    if report.skipped:
        out.text(f"{plural(report.skipped, 'patient')} already matched when re-read; skipped.")
    return 0


def parse_duration(value: str) -> float:
    """`60`, `60s`, `2m`, `1h` → seconds."""
    text = value.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:])
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r} (e.g. 60s, 2m)") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r}")
    return seconds


def _audit(conn: Connection, plan: Plan, report: Report) -> None:
    counts = {
        "patients_planned": report.planned,
        "patients_updated": len(report.succeeded),
        "patients_failed": len(report.failed),
        "patients_skipped": report.skipped,
        "accounts_added": report.added,
        "accounts_removed": report.removed,
        "compartment_repaired": report.repaired,
    }
    success = not report.failed and not report.unrepaired and not report.interrupted
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


def apply(options: argparse.Namespace) -> int:
    out = _Out(options.format == "json")
    paths = options.paths or DEFAULT_PATHS
    saved = len(paths) == 1 and looks_like_plan(paths[0])
    if not saved and any(looks_like_plan(p) for p in paths):
        raise UsageError("a saved plan must be the only path given to apply")
    manifests: ManifestSet | None = None
    saved_plan: Plan | None = None
    if saved:
        saved_plan, _ = load_plan(paths[0])
    else:
        manifests = load_manifests(paths)
    with connect_options(options) as conn:
        if saved_plan is not None:
            # Same server, nothing moved since: checked before anything is shown or written.
            _check_saved_plan(conn, saved_plan, paths[0])
            plan, replan = saved_plan, None
        else:
            assert manifests is not None
            plan, live = build_plan(
                conn, manifests, quota_points=DEFAULT_QUOTA_POINTS, parallelism=options.parallelism
            )
            replan = _replanner(manifests, live)
        if options.format == "text":
            out.text(render_text(plan, color=use_color(sys.stdout.isatty())).rstrip("\n"))
        if plan.is_empty:
            if options.format == "json":
                out.text(render_text(plan).rstrip("\n"))
            out.event(
                "apply_summary", {"planned": 0, "updated": 0, "added": 0, "removed": 0, "failed": 0}
            )
            return 0
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
        if saved_plan is None:
            _approve(options, out)
        lock: ApplyLock | None = None
        if options.lock == "true":
            lock = ApplyLock(
                conn.client,
                plan_digest=plan_digest(plan),
                ttl_s=options.lock_ttl,
                wait_s=options.lock_timeout,
            )
            lock.acquire()
        else:
            log.warning(
                "apply lock disabled (--lock=false): another apply may run at the same time"
            )
        try:
            out.event(
                "apply_start",
                {
                    "patients": len(plan.changes),
                    "add": plan.added,
                    "remove": plan.removed,
                    "server": plan.server,
                },
            )
            executor = Executor(
                conn.client,
                plan.managed,
                parallelism=options.parallelism,
                job_timeout=options.job_timeout,
                verify=not options.no_verify,
                replan=replan,
                on_event=out.event,
            )
            restore = _install_interrupt(executor)
            progress = Progress("applying", total=len(plan.changes))
            conn.client.pacer.on_wait = lambda delay, _why: progress.update(
                progress.done, waiting=f"for quota, {delay:.0f}s"
            )
            try:
                report = executor.run(
                    plan, lambda done, failed: progress.update(done, failed=failed, waiting="")
                )
            finally:
                conn.client.pacer.on_wait = None
                progress.close()
                restore()
            if not options.no_audit and (report.outcomes or report.repaired):
                _audit(conn, plan, report)
        finally:
            if lock is not None:
                lock.release()
    return _report(report, out)


def force_unlock_cmd(options: argparse.Namespace) -> int:
    with connect_options(options) as conn:
        info = force_unlock(conn.client, options.lock_id)
    print(f"Removed the apply lock Basic/{info.id} (held since {info.since} by {info.holder}).")
    return 0


def verify(options: argparse.Namespace) -> int:
    manifests = load_manifests(options.paths or DEFAULT_PATHS)
    with connect_options(options) as conn:
        live = read_live_state(conn.client, manifests.tenants, parallelism=options.parallelism)
        managed = managed_accounts(manifests.tenants, live)
        propagating = {a for a, info in managed.items() if info.propagate}
        expectations = {
            ref: Expectation(
                must_have=frozenset(a for a in p.accounts if a in propagating),
                must_not=frozenset(a for a in propagating if a not in p.accounts),
            )
            for ref, p in live.patients.items()
        }
        stragglers, read = find_stragglers(conn.client, expectations)
        repaired = 0
        errors: list[str] = []
        if stragglers and options.repair:
            repaired = repair(
                conn.client,
                stragglers,
                parallelism=options.parallelism,
                on_error=lambda s, reason: errors.append(f"  {s.resource} ({s.patient}): {reason}"),
            )
    patients = len({s.patient for s in stragglers})
    print(
        f"Checked {plural(read, 'compartment resource')} of "
        f"{plural(len(live.patients), 'patient')}: {plural(len(stragglers), 'resource')} of "
        f"{plural(patients, 'patient')} out of step."
    )
    for s in stragglers[:50]:
        print(f"  {s.resource} ({s.patient}): has {list(s.have)}, should have {list(s.want)}")
    if len(stragglers) > 50:
        print(f"  ... and {len(stragglers) - 50} more")
    if options.repair and stragglers:
        print(f"Repaired {repaired} of {len(stragglers)}.")
        for line in errors:
            print(line)
        if repaired == len(stragglers):
            return 0
        return 1
    if stragglers:
        return 2 if options.detailed_exitcode else 1
    return 0


def register(
    add: Callable[..., argparse.ArgumentParser], sandbox_data: Callable[..., None]
) -> None:
    p = add("apply", apply, "make the server match the manifests, or apply a saved plan")
    p.add_argument("paths", nargs="*", metavar="PATH", help="manifests, or one saved plan file")
    p.add_argument("--auto-approve", action="store_true", help="do not ask for 'yes'")
    p.add_argument("--no-verify", action="store_true", help="skip compartment verification")
    p.add_argument(
        "--job-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="give up waiting for one async job after S seconds (default 300)",
    )
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: JSON lines events on stdout for CI",
    )
    p.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="apply even when a tenant would lose over half of its members",
    )
    p.add_argument(
        "--max-removals",
        type=int,
        default=None,
        metavar="N",
        help="refuse when the plan removes more than N accounts in all",
    )
    p.add_argument(
        "--lock",
        choices=("true", "false"),
        default="true",
        help="take the server-side apply lock (default true; false is for emergencies)",
    )
    p.add_argument(
        "--lock-timeout",
        type=parse_duration,
        default=0.0,
        metavar="DURATION",
        help="wait this long for another apply's lock (e.g. 60s); default: fail at once",
    )
    p.add_argument(
        "--lock-ttl",
        type=parse_duration,
        default=600.0,
        metavar="DURATION",
        help="lock expiry, renewed while applying (default 10m)",
    )
    p.add_argument("--no-audit", action="store_true", help="do not write the AuditEvent")
    sandbox_data(p)

    p = add("force-unlock", force_unlock_cmd, "remove a stale apply lock")
    p.add_argument("lock_id", metavar="LOCK_ID", help="the Basic resource id the error names")
    sandbox_data(p)

    p = add("verify", verify, "check that every compartment carries its patient's accounts")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--repair", action="store_true", help="fix the resources that are out of step")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when drift is found")
    sandbox_data(p)
