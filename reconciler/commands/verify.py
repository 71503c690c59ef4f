"""`reconciler verify`: every compartment resource carries its patient's managed accounts; with
`--access`, what each managed member can see, proven on the server."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.apply.verification import RepairOptions, verify
from reconciler.commands._args import add_target_option, parse_duration, server_options
from reconciler.connect import ServerOptions, connect, preflight
from reconciler.errors import ExitCode
from reconciler.manifest import DEFAULT_PATHS, load_manifests, select_targets
from reconciler.views.verify import VERIFY_VIEWS


@dataclass(frozen=True)
class Options:
    paths: tuple[str, ...]
    repair: bool
    access: bool
    detailed_exitcode: bool
    parallelism: int
    server: ServerOptions
    targets: tuple[str, ...] = ()
    allow_mass_grant: bool = False
    allow_mass_removal: bool = False
    lock_timeout: float = 0.0
    lock_ttl: float = 600.0
    format: str = "text"

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
            allow_mass_grant=ns.allow_mass_grant,
            allow_mass_removal=ns.allow_mass_removal,
            lock_timeout=ns.lock_timeout,
            lock_ttl=ns.lock_ttl,
            format=ns.format,
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
    repair = parser.add_argument_group("repair options (with --repair)")
    repair.add_argument(
        "--allow-mass-grant",
        action="store_true",
        help="repair even when it adds a tenant's account to over half of what carries it, or "
        "grants access to more than 10 memberships",
    )
    repair.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="repair even when it takes a tenant's account from over half of what carries it",
    )
    repair.add_argument(
        "--lock-timeout",
        "-lock-timeout",
        type=parse_duration,
        default=0.0,
        metavar="DURATION",
        help="wait this long for another apply's lock (default: fail at once)",
    )
    repair.add_argument(
        "--lock-ttl",
        type=parse_duration,
        default=600.0,
        metavar="DURATION",
        help="lock expiry, renewed while repairing (default: 10m)",
    )
    parser.add_argument(
        "--detailed-exitcode",
        "-detailed-exitcode",
        action="store_true",
        help="exit 2 when drift is found",
    )
    parser.add_argument(
        "--format",
        choices=tuple(VERIFY_VIEWS),
        default="text",
        help="markdown: for a CI job summary (default: text)",
    )


def run(options: Options) -> int:
    manifests = select_targets(load_manifests(options.paths), options.targets)
    view = VERIFY_VIEWS[options.format]()
    with connect(options.server) as conn:
        preflight(conn, need_admin="verify --repair" if options.repair else None)
        repair = RepairOptions(
            allow_mass_grant=options.allow_mass_grant,
            allow_mass_removal=options.allow_mass_removal,
            lock_ttl=options.lock_ttl,
            lock_timeout=options.lock_timeout,
            request_deadline=options.server.timeout,
        )
        result = verify(
            conn.client,
            manifests,
            repair_with=repair if options.repair else None,
            access=options.access,
            parallelism=options.parallelism,
        )
    view.result(result)
    if result.repair_failed:
        return ExitCode.ERROR
    if result.drift:
        return ExitCode.CHANGES if options.detailed_exitcode else ExitCode.ERROR
    return ExitCode.OK
