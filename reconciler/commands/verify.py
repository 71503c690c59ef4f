"""`reconciler verify`: every compartment resource carries its patient's managed accounts; with
`--access`, what each managed member can see, proven on the server."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.apply.verification import verify
from reconciler.commands._args import add_target_option, server_options
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
    view = VERIFY_VIEWS["text"]()
    with connect(options.server) as conn:
        preflight(conn, need_admin="verify --repair" if options.repair else None)
        result = verify(
            conn.client,
            manifests.tenants,
            repair_drift=options.repair,
            access=options.access,
            parallelism=options.parallelism,
        )
    view.result(result)
    if result.repair_failed:
        return ExitCode.ERROR
    if result.drift:
        return ExitCode.CHANGES if options.detailed_exitcode else ExitCode.ERROR
    return ExitCode.OK
