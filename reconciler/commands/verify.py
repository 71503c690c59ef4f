"""`reconciler verify`: every compartment resource carries its patient's managed accounts."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.apply.verify import expectations_for_live, find_stragglers, repair
from reconciler.commands._args import server_options
from reconciler.commands.views import View
from reconciler.connect import ServerOptions, connect
from reconciler.errors import ExitCode
from reconciler.manifest import DEFAULT_PATHS, load_manifests
from reconciler.plan.live import read_live_state
from reconciler.plan.planner import managed_accounts
from reconciler.plan.render import plural

MAX_SHOWN = 50


@dataclass(frozen=True)
class Options:
    paths: tuple[str, ...]
    repair: bool
    detailed_exitcode: bool
    parallelism: int
    server: ServerOptions

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(
            paths=tuple(ns.paths or DEFAULT_PATHS),
            repair=ns.repair,
            detailed_exitcode=ns.detailed_exitcode,
            parallelism=ns.parallelism,
            server=server_options(ns),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH", help="manifest files or directories")
    parser.add_argument("--repair", action="store_true", help="fix the resources out of step")
    parser.add_argument(
        "--detailed-exitcode", action="store_true", help="exit 2 when drift is found"
    )


def run(options: Options) -> int:
    manifests = load_manifests(options.paths)
    view = View()
    errors: list[str] = []
    repaired = 0
    with connect(options.server) as conn:
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
    if options.repair and stragglers:
        view.result(f"Repaired {repaired} of {len(stragglers)}.")
        view.results(errors)
        return ExitCode.OK if repaired == len(stragglers) else ExitCode.ERROR
    if stragglers:
        return ExitCode.CHANGES if options.detailed_exitcode else ExitCode.ERROR
    return ExitCode.OK
