"""`reconciler force-unlock LOCK_ID`: remove a stale apply lock."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.apply.lock import force_unlock
from reconciler.commands._args import server_options
from reconciler.commands.views import View
from reconciler.connect import ServerOptions, connect, preflight
from reconciler.errors import ExitCode


@dataclass(frozen=True)
class Options:
    lock_id: str
    server: ServerOptions

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(lock_id=ns.lock_id, server=server_options(ns))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lock_id", metavar="LOCK_ID", help="the Basic resource id the error names")


def run(options: Options) -> int:
    with connect(options.server) as conn:
        preflight(conn, need_admin="force-unlock")
        info = force_unlock(conn.client, options.lock_id)
    View().result(
        f"Removed the apply lock Basic/{info.id} (held since {info.since} by {info.holder})."
    )
    return ExitCode.OK
