"""`reconciler history`: the last applies, from the AuditEvents the tool writes — when, by
which client, the outcome, the counts, the plan and manifests digests, the commit, the CI run."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.apply.history import read_history
from reconciler.commands._args import bounded_int, server_options
from reconciler.connect import ServerOptions, connect, preflight
from reconciler.errors import ExitCode
from reconciler.views.history import HISTORY_VIEWS

MAX_LIMIT = 1000  # Medplum's largest page


@dataclass(frozen=True)
class Options:
    limit: int
    format: str
    server: ServerOptions

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(limit=ns.limit, format=ns.format, server=server_options(ns))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        type=bounded_int(1, MAX_LIMIT),
        default=10,
        metavar="N",
        help=f"the last N runs, 1 to {MAX_LIMIT} (default: %(default)s)",
    )
    parser.add_argument(
        "--format", choices=tuple(HISTORY_VIEWS), default="text", help="(default: text)"
    )


def run(options: Options) -> int:
    with connect(options.server) as conn:
        preflight(conn, need_admin=None)
        runs = read_history(conn.client, options.limit)
    HISTORY_VIEWS[options.format]().runs(runs, options.limit)
    return ExitCode.OK
