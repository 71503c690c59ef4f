"""`reconciler plan`: read live state and show what apply would change."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from reconciler.commands._args import (
    add_target_option,
    non_negative_int,
    positive_int,
    server_options,
)
from reconciler.commands.redaction import redaction_key
from reconciler.connect import ServerOptions, connect, preflight
from reconciler.errors import ExitCode, UsageError
from reconciler.manifest import DEFAULT_PATHS, load_manifests, select_targets
from reconciler.plan.build import build_plan
from reconciler.plan.estimate import DEFAULT_QUOTA_POINTS
from reconciler.plan.jsonform import plan_digest
from reconciler.plan.planfile import save_plan
from reconciler.plan.render import redact
from reconciler.plan.signing import plan_key, sign
from reconciler.views.plan import PLAN_VIEWS, plan_view
from reconciler.views.progress import Progress


@dataclass(frozen=True)
class Options:
    paths: tuple[str, ...]
    out: str | None
    format: str
    detailed_exitcode: bool
    redact: bool
    max_removals: int | None
    quota_points: int | None  # None: no estimate
    parallelism: int
    server: ServerOptions
    targets: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(
            paths=tuple(ns.paths or DEFAULT_PATHS),
            out=ns.out,
            format=ns.format,
            detailed_exitcode=ns.detailed_exitcode,
            redact=ns.redact,
            max_removals=ns.max_removals,
            quota_points=None if ns.no_estimate else ns.quota_points,
            parallelism=ns.parallelism,
            server=server_options(ns),
            targets=tuple(ns.target),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_option(parser)
    parser.add_argument("paths", nargs="*", metavar="PATH", help="manifest files or directories")
    parser.add_argument(
        "--out", "-out", metavar="FILE", help="save the plan (JSON, mode 0600) for apply"
    )
    parser.add_argument(
        "--format", choices=tuple(PLAN_VIEWS), default="text", help="(default: text)"
    )
    parser.add_argument(
        "--detailed-exitcode",
        "-detailed-exitcode",
        action="store_true",
        help="exit 2 when there are changes",
    )
    parser.add_argument(
        "--redact",
        action="store_true",
        help="hide patient, membership and identifier values (keyed by $RECONCILER_REDACT_KEY)",
    )
    parser.add_argument(
        "--max-removals",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="warn when the plan removes more than N accounts",
    )
    parser.add_argument(
        "--quota-points",
        type=positive_int,
        default=DEFAULT_QUOTA_POINTS,
        metavar="N",
        help="FHIR quota points per minute assumed by the cost estimate (default: %(default)s, "
        "Medplum's default)",
    )
    parser.add_argument("--no-estimate", action="store_true", help="skip the quota cost estimate")


def run(options: Options) -> int:
    if options.redact and options.out:
        raise UsageError(
            "--redact cannot be combined with --out: a redacted plan cannot be applied"
        )
    key = redaction_key() if options.redact else b""  # before any work: CI may refuse it
    key_for_saving = plan_key(create=True, purpose="plan --out") if options.out else None
    manifests = select_targets(load_manifests(options.paths), options.targets)
    view = plan_view(options.format)
    with connect(options.server) as conn:
        preflight(conn, need_admin=None)
        progress = Progress("reading live state")
        try:
            the_plan, _ = build_plan(
                conn.client,
                conn.identity,
                manifests,
                quota_points=options.quota_points,
                parallelism=options.parallelism,
                progress=progress.update,
                target=conn.target,
                targets=options.targets,
            )
        finally:
            progress.close()
    if key_for_saving is not None:  # what is shown is what is saved, signature and all
        the_plan = replace(the_plan, signature=sign(plan_digest(the_plan), key_for_saving.key))
    view.plan(redact(the_plan, key) if options.redact else the_plan)
    if options.max_removals is not None and the_plan.removed > options.max_removals:
        view.removals_over_limit(the_plan.removed, options.max_removals)
    if options.out and key_for_saving is not None:
        save_plan(the_plan, options.out, key=key_for_saving.key)
        view.saved(options.out, key_for_saving)
    if options.detailed_exitcode and not the_plan.is_empty:
        return ExitCode.CHANGES
    return ExitCode.OK
