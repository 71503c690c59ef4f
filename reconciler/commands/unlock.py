"""`reconciler force-unlock LOCK_ID`: remove a stale apply lock."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.apply.lock import LockInfo, force_unlock
from reconciler.commands._args import server_options
from reconciler.connect import ServerOptions, connect, preflight
from reconciler.errors import ApplyRefused, ExitCode
from reconciler.views.output import Output


@dataclass(frozen=True)
class Options:
    lock_id: str
    force: bool
    server: ServerOptions

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(lock_id=ns.lock_id, force=ns.force, server=server_options(ns))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lock_id", metavar="LOCK_ID", help="the Basic resource id the error names")
    parser.add_argument("--force", action="store_true", help="do not ask for 'yes'")


def _confirm(view: Output) -> Callable[[LockInfo], bool]:
    """Removing a live lock lets two applies write at once: ask, on a terminal only."""

    def ask(info: LockInfo) -> bool:
        if sys.stdin is None or not sys.stdin.isatty():
            raise ApplyRefused(
                "refusing to remove the lock: stdin is not a terminal and --force was not "
                "given; nothing was changed"
            )
        answer = view.prompt(
            f"Remove the apply lock Basic/{info.id} held by {info.holder} since {info.since}? "
            "Another apply may still be running. Only 'yes' will be accepted: "
        )
        return answer.strip() == "yes"

    return ask


def run(options: Options) -> int:
    with connect(options.server) as conn:
        preflight(conn, need_admin="force-unlock")
        info = force_unlock(
            conn.client, options.lock_id, None if options.force else _confirm(Output())
        )
    Output().result(
        f"Removed the apply lock Basic/{info.id} (held since {info.since} by {info.holder})."
    )
    return ExitCode.OK
