"""`reconciler verify`: every compartment resource carries its patient's managed accounts."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.apply.access import AccessWriter
from reconciler.apply.verify import expectations_for_live, find_stragglers, repair
from reconciler.apply.verify_access import check_access
from reconciler.commands._args import add_target_option, server_options
from reconciler.commands.views import View
from reconciler.connect import ServerOptions, connect, preflight
from reconciler.errors import ExitCode, PlanError
from reconciler.manifest import DEFAULT_PATHS, load_manifests, select_targets
from reconciler.medplum.client import MedplumClient
from reconciler.model import LiveState, Phase, Tenant
from reconciler.plan.access import plan_access
from reconciler.plan.live import read_live_state
from reconciler.plan.planner import managed_accounts
from reconciler.plan.render import plural

MAX_SHOWN = 50


@dataclass(frozen=True)
class Options:
    paths: tuple[str, ...]
    repair: bool
    access: bool
    detailed_exitcode: bool
    parallelism: int
    server: ServerOptions
    targets: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(
            paths=tuple(ns.paths or DEFAULT_PATHS),
            repair=ns.repair,
            access=ns.access,
            detailed_exitcode=ns.detailed_exitcode,
            parallelism=ns.parallelism,
            server=server_options(ns),
            targets=tuple(ns.target),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_option(parser)
    parser.add_argument("paths", nargs="*", metavar="PATH", help="manifest files or directories")
    parser.add_argument("--repair", action="store_true", help="fix what is out of step")
    parser.add_argument(
        "--access",
        action="store_true",
        help="also prove what each managed member can see (X-Medplum-On-Behalf-Of)",
    )
    parser.add_argument(
        "--detailed-exitcode",
        "-detailed-exitcode",
        action="store_true",
        help="exit 2 when drift is found",
    )


def run(options: Options) -> int:
    manifests = select_targets(load_manifests(options.paths), options.targets)
    view = View()
    errors: list[str] = []
    repaired = 0
    with connect(options.server) as conn:
        preflight(conn, need_admin="verify --repair" if options.repair else None)
        live = read_live_state(conn.client, manifests.tenants, parallelism=options.parallelism)
        expectations = expectations_for_live(live, managed_accounts(manifests.tenants, live))
        stragglers, read = find_stragglers(conn.client, expectations)
        if stragglers and options.repair:
            repaired = repair(
                conn.client,
                stragglers,
                parallelism=options.parallelism,
                on_error=lambda s, reason: errors.append(f"  {s.resource} ({s.patient}): {reason}"),
            )
        access_drift, access_lines = 0, list[str]()
        if options.access:
            access_drift, access_lines = _verify_access(
                conn.client, manifests.tenants, live, options
            )
    patients = len({s.patient for s in stragglers})
    view.result(
        f"Checked {plural(read, 'compartment resource')} of "
        f"{plural(len(live.patients), 'patient')}: {plural(len(stragglers), 'resource')} of "
        f"{plural(patients, 'patient')} out of step."
    )
    view.results(
        f"  {s.resource} ({s.patient}): has {list(s.have)}, should have {list(s.want)}"
        for s in stragglers[:MAX_SHOWN]
    )
    if len(stragglers) > MAX_SHOWN:
        view.result(f"  ... and {len(stragglers) - MAX_SHOWN} more")
    view.results(access_lines)
    if options.repair and stragglers:
        view.result(f"Repaired {repaired} of {len(stragglers)}.")
        view.results(errors)
        if repaired != len(stragglers):
            return ExitCode.ERROR
        stragglers = []
    if access_drift < 0:
        return ExitCode.ERROR  # a repair failed
    if stragglers or access_drift:
        return ExitCode.CHANGES if options.detailed_exitcode else ExitCode.ERROR
    return ExitCode.OK


def _verify_access(
    client: MedplumClient,
    tenants: tuple[Tenant, ...],
    live: LiveState,
    options: Options,
) -> tuple[int, list[str]]:
    """The access proof; with --repair, membership drift is written back and checked again.
    Returns (drift that remains, -1 when a repair failed; the lines to print)."""
    drift = plan_access(tenants, live)
    if drift.problems:
        raise PlanError(drift.problems)
    check = check_access(client, tenants, live, drift.changes, parallelism=options.parallelism)
    count = len(check.mismatches)
    lines = [
        f"Checked access of {plural(check.memberships, 'membership')} to "
        f"{plural(check.tenants, 'tenant')}: {count:,} mismatch{'' if count == 1 else 'es'}.",
        *(f"  {line}" for line in check.mismatches),
    ]
    if not options.repair or not drift.changes:
        return count, lines
    writer = AccessWriter(client, drift.changes, parallelism=options.parallelism)
    writer.run(Phase.REVOKE)
    writer.run(Phase.GRANT)
    report = writer.report
    lines.append(
        f"Repaired access of {len(report.updated)} of {plural(report.planned, 'membership')}: "
        f"{plural(report.granted, 'grant')} added, {plural(report.revoked, 'grant')} revoked."
    )
    lines += [f"  {o.membership}: {o.reason}" for o in report.failed]
    if report.failed:
        return -1, lines
    fresh = read_live_state(client, tenants, parallelism=options.parallelism)
    after = check_access(
        client, tenants, fresh, plan_access(tenants, fresh).changes, parallelism=options.parallelism
    )
    lines += [f"  still: {line}" for line in after.mismatches]
    return len(after.mismatches), lines
