"""`reconciler apply`: plan (or load a saved plan), guard, approve, lock, execute, report."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from reconciler.apply.session import ApplySession, Ending, SessionOptions, take_lock
from reconciler.commands._args import (
    add_guard_options,
    add_lock_options,
    add_target_option,
    parse_duration,
    positive_seconds,
    server_options,
)
from reconciler.connect import Connection, ServerOptions, connect, preflight
from reconciler.errors import ApplyRefused, ExitCode, UsageError
from reconciler.manifest import DEFAULT_PATHS, load_manifests, select_targets
from reconciler.model import ManifestSet, Plan
from reconciler.plan.build import build_plan
from reconciler.plan.estimate import DEFAULT_QUOTA_POINTS, Extras
from reconciler.plan.guard import refuse_unguarded
from reconciler.plan.jsonform import plan_digest
from reconciler.plan.planfile import looks_like_plan
from reconciler.plan.replan import Replanner, replanner
from reconciler.plan.saved import (
    check_server,
    load_saved_plan,
    tied_manifests,
    trusted_saved_plan,
)
from reconciler.views.apply import APPLY_VIEWS, ApplyView
from reconciler.views.progress import Progress

EXIT_CODES = {
    Ending.COMPLETE: ExitCode.OK,
    Ending.UNCHECKED: ExitCode.ERROR,
    Ending.FAILED: ExitCode.ERROR,
    Ending.LOCK_LOST: ExitCode.ERROR,
    Ending.INTERRUPTED: ExitCode.INTERRUPTED,
}


@dataclass(frozen=True)
class Options:
    paths: tuple[str, ...]
    auto_approve: bool
    verify: bool
    job_timeout: float
    format: str
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
    manifests: tuple[str, ...] = ()  # a saved plan's manifests, when not where it says
    max_plan_age: float | None = 86_400.0
    propagate_with: str = "auto"

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(
            paths=tuple(ns.paths or DEFAULT_PATHS),
            auto_approve=ns.auto_approve,
            verify=not ns.no_verify,
            job_timeout=ns.job_timeout,
            format=ns.format,
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
            manifests=tuple(ns.manifests),
            max_plan_age=ns.max_plan_age or None,
            propagate_with=ns.propagate_with,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_option(parser)
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
        choices=tuple(APPLY_VIEWS),
        default="text",
        help="json: JSON-lines events on stdout for CI (default: text)",
    )
    add_guard_options(parser)
    add_lock_options(parser)
    saved = parser.add_argument_group("saved plans")
    saved.add_argument(
        "--manifests",
        action="append",
        default=[],
        metavar="PATH",
        help="the manifests a saved plan was made from (default: the paths it records)",
    )
    saved.add_argument(
        "--max-plan-age",
        type=parse_duration,
        default=86_400.0,
        metavar="DURATION",
        help="under CI=true, refuse a saved plan older than this (default: 24h; 0: no limit)",
    )
    parser.add_argument("--no-audit", action="store_true", help="do not write the AuditEvent")
    parser.add_argument(
        "--propagate-with",
        choices=("auto", "sync", "async"),
        default="auto",
        help="how a propagating $set-accounts is sent: auto (synchronously when its "
        "compartment holds at most 200 resources and one quota window can hold the call, "
        "else an async job), sync, or async (default: %(default)s)",
    )


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


def _approve(options: Options, view: ApplyView, target: str) -> None:
    if options.auto_approve:
        return
    _can_ask(options)
    answer = view.prompt(target).strip()
    if answer != "yes":
        raise ApplyRefused(
            f"apply cancelled (answer was {answer!r}, not 'yes'); nothing was changed"
        )


def _load(options: Options) -> tuple[Plan | None, ManifestSet]:
    paths, targets = options.paths, options.targets
    saved = len(paths) == 1 and looks_like_plan(paths[0])
    if not saved and any(looks_like_plan(p) for p in paths):
        raise UsageError("a saved plan must be the only path given to apply")
    if saved:
        if targets:
            raise UsageError("--target goes with manifests; a saved plan records its own")
        plan = load_saved_plan(paths[0], max_age_s=options.max_plan_age)
        return plan, tied_manifests(plan, paths[0], options.manifests)
    if options.manifests:
        raise UsageError("--manifests goes with a saved plan; give manifests as paths")
    return None, select_targets(load_manifests(paths), targets)


def _session_options(options: Options) -> SessionOptions:
    return SessionOptions(
        parallelism=options.parallelism,
        job_timeout=options.job_timeout,
        verify=options.verify,
        lock=options.lock,
        lock_timeout=options.lock_timeout,
        lock_ttl=options.lock_ttl,
        request_deadline=options.server.timeout,
        audit=options.audit,
        propagate_with=options.propagate_with,
    )


def _plan(
    conn: Connection, options: Options, saved_plan: Plan | None, manifests: ManifestSet
) -> tuple[Plan, Replanner | None]:
    if saved_plan is not None:
        # Same server, nothing moved since, and exactly what its manifests give on this
        # server: checked before anything is shown or written.
        plan = trusted_saved_plan(
            conn.client, conn.identity, saved_plan, options.paths[0], manifests,
            parallelism=options.parallelism,
        )  # fmt: skip
        return plan, None
    progress = Progress("reading live state", unit="patients")
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
            for_apply=Extras(lock=options.lock, audit=options.audit, verify=options.verify),
        )
    finally:
        progress.close()
    return plan, replanner(manifests.tenants, live)


def run(options: Options) -> int:
    view = APPLY_VIEWS[options.format]()
    saved_plan, manifests = _load(options)
    if saved_plan is None:
        _can_ask(options)
    if options.lock and options.lock_ttl < 2 * options.server.timeout:
        raise UsageError(
            f"--lock-ttl {options.lock_ttl:g}s is too short for --timeout "
            f"{options.server.timeout:g}s: the lock must outlive a write in flight, so give a "
            "TTL of at least twice the request timeout; nothing was read or written"
        )
    session_options = _session_options(options)
    with connect(options.server) as conn:
        me = preflight(conn, need_admin="apply")
        if saved_plan is not None:
            check_server(conn.identity, saved_plan, options.paths[0])
        # The lock first: held while the server is read, through the prompt and the writes.
        lock = take_lock(conn.client, session_options)
        try:
            plan, replan = _plan(conn, options, saved_plan, manifests)
            if lock is not None:  # `lock status` shows which plan is waiting for its 'yes'
                lock.record_plan(plan_digest(plan))
            view.plan(plan)
            if plan.is_empty:
                view.nothing_to_do()
                return ExitCode.OK
            refuse_unguarded(
                plan,
                allow_mass_removal=options.allow_mass_removal,
                max_removals=options.max_removals,
                allow_mass_grant=options.allow_mass_grant,
                max_grants=options.max_grants,
            )
            if saved_plan is None:
                _approve(options, view, conn.target)
            session = ApplySession(
                conn.client, plan, view, options=session_options, replanner=replan,
                author=me.profile if me else None, lock=lock,
            )  # fmt: skip
            result = session.run()
        finally:
            if lock is not None:  # the session released it already when it ran
                note = lock.release()
                if note:
                    view.message(note)
    view.result(result, conn.target)
    return EXIT_CODES[result.ending]
