"""`reconciler plan`: read live state and show what apply would change."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from reconciler import phi
from reconciler.commands._args import (
    add_target_option,
    non_negative_int,
    positive_int,
    server_options,
)
from reconciler.connect import ServerOptions, connect, preflight
from reconciler.errors import ExitCode, UsageError
from reconciler.manifest import DEFAULT_PATHS, load_manifests, select_targets
from reconciler.model import ManifestSet
from reconciler.plan.build import build_plan
from reconciler.plan.estimate import DEFAULT_QUOTA_POINTS
from reconciler.plan.jsonform import plan_digest
from reconciler.plan.live_access import access_needs_admin
from reconciler.plan.planfile import save_plan
from reconciler.plan.render import plural, redact
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
    skip_access: bool = False

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
            skip_access=ns.skip_access,
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
    parser.add_argument(
        "--skip-access",
        action="store_true",
        help="plan patients and resources only, not the manifests' access: for a client that "
        "may not read ProjectMemberships (a pull request's); said in the plan; not with --out",
    )


def _without_access(manifests: ManifestSet) -> tuple[ManifestSet, str | None]:
    """`--skip-access`: the tenants without their grants, and the warning the plan carries."""
    declaring = [t.name for t in manifests.tenants if t.access]
    if not declaring:
        return manifests, None
    tenants = tuple(replace(t, access=()) for t in manifests.tenants)
    warning = (
        f"access not planned (--skip-access): {plural(len(declaring), 'tenant')} declare "
        f"access ({', '.join(declaring)}); review it with `reconciler diff --base REF`, plan "
        "it with a project-admin client"
    )
    return replace(manifests, tenants=tenants), warning


def run(options: Options) -> int:
    if options.skip_access and options.out:
        raise UsageError(
            "--skip-access cannot be combined with --out: apply plans access too, so a plan "
            "without it cannot be applied"
        )
    key = phi.current_key() if options.redact else b""
    key_for_saving = plan_key(create=True, purpose="plan --out") if options.out else None
    manifests = select_targets(load_manifests(options.paths), options.targets)
    skipped: str | None = None
    if options.skip_access:
        manifests, skipped = _without_access(manifests)
    view = plan_view(options.format)
    with connect(options.server) as conn:
        me = preflight(conn, need_admin=None)
        if me is not None and not me.admin and any(t.access for t in manifests.tenants):
            raise access_needs_admin(
                f" (the client {conn.client.client_id!r} is not a project admin)"
            )
        progress = Progress("reading live state", unit="patients")
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
    if skipped is not None:
        the_plan = replace(the_plan, warnings=(*the_plan.warnings, skipped))
    if key_for_saving is not None:  # what is shown is what is saved, signature and all
        the_plan = replace(the_plan, signature=sign(plan_digest(the_plan), key_for_saving.key))
    shown = redact(the_plan, key) if options.redact else the_plan
    if options.out:  # the file holds the plan; the log gets the counts (CI logs keep no PHI)
        view.summary(shown)
    else:
        view.plan(shown)
    if options.max_removals is not None and the_plan.removed > options.max_removals:
        view.removals_over_limit(the_plan.removed, options.max_removals)
    if options.out and key_for_saving is not None:
        save_plan(the_plan, options.out, key=key_for_saving.key)
        view.saved(options.out, key_for_saving)
    if options.detailed_exitcode and not the_plan.is_empty:
        return ExitCode.CHANGES
    return ExitCode.OK
