"""`reconciler force-unlock LOCK_ID`: remove a stale apply lock. A live one — renewed within its
TTL on the server's clock, so an apply may still be writing — names its holder and last
renewal and is removed only with `--force` and a `yes` (the apply then stops at its next
batch: it confirms its lock before each one)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.apply.lock import LockState, force_unlock
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
    parser.add_argument(
        "--force",
        action="store_true",
        help="remove a stale lock without asking; a live lock needs it and a 'yes' on stdin",
    )


def _confirm(view: Output, force: bool) -> Callable[[LockState], bool]:
    """Removing a live lock lets two applies write at once: always asked, and answered on stdin
    (a script pipes `yes`); a stale one is asked on a terminal unless --force."""

    def ask(state: LockState) -> bool:
        info = state.info
        if not state.live and force:
            return True
        if not state.live and (sys.stdin is None or not sys.stdin.isatty()):
            raise ApplyRefused(
                "refusing to remove the lock: stdin is not a terminal and --force was not "
                "given; nothing was changed"
            )
        live = (
            f" It is LIVE (last renewed {info.renewed}): that apply may still be writing, "
            "and will stop at its next batch."
            if state.live
            else ""
        )
        answer = view.prompt(
            f"Remove the apply lock Basic/{info.id} held by {info.holder} since {info.since}?"
            f"{live} Only 'yes' will be accepted: "
        )
        return answer.strip() == "yes"

    return ask


def run(options: Options) -> int:
    with connect(options.server) as conn:
        preflight(conn, need_admin="force-unlock")
        info = force_unlock(
            conn.client,
            options.lock_id,
            _confirm(Output(), options.force),
            force=options.force,
        )
    Output().result(
        f"Removed the apply lock Basic/{info.id} (held since {info.since} by {info.holder})."
    )
    return ExitCode.OK
