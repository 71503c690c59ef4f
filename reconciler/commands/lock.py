"""`reconciler lock status`: who holds the apply lock, since when, until when (on the server's
clock) and for which plan — or `No apply holds the lock.` Reads only."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from reconciler.apply.lock import LockState, current_lock
from reconciler.clock import iso_utc
from reconciler.commands._args import server_options
from reconciler.connect import ServerOptions, connect, preflight
from reconciler.errors import ExitCode
from reconciler.views.output import Output


@dataclass(frozen=True)
class Options:
    action: str
    format: str
    server: ServerOptions

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(action=ns.action, format=ns.format, server=server_options(ns))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=("status",), help="status: show the apply lock (remove a stale one "
        "with `reconciler force-unlock LOCK_ID`)",
    )  # fmt: skip
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="(default: text)"
    )


def _as_json(state: LockState | None) -> dict[str, object]:
    if state is None:
        return {"held": False}
    info, ends = state.info, state.info.expires_at()
    return {
        "held": state.live,
        "lock": f"Basic/{info.id}",
        "holder": info.holder,
        "since": info.since,
        "renewed": info.renewed,
        "expires": iso_utc(ends) if ends else None,
        "plan_digest": info.plan or None,
        "server_time": iso_utc(state.server_now),
    }


def _lines(state: LockState) -> list[str]:
    info, ends = state.info, state.info.expires_at()
    head = (
        f"The apply lock Basic/{info.id} is held by {info.holder}."
        if state.live
        else f"The apply lock Basic/{info.id} of {info.holder} has EXPIRED: the next apply takes "
        f"it over (or remove it: reconciler force-unlock {info.id})."
    )
    return [
        head,
        f"  since:    {info.since or 'unknown'}",
        f"  renewed:  {info.renewed or 'unknown'} (server time)",
        f"  expires:  {iso_utc(ends) if ends else 'unknown: held until removed'}"
        + (" unless renewed" if state.live and ends else ""),
        f"  plan:     {info.plan or 'not planned yet (reading the server or at the prompt)'}",
    ]


def run(options: Options) -> int:
    with connect(options.server) as conn:
        preflight(conn, need_admin=None)
        state = current_lock(conn.client)
    out = Output()
    if options.format == "json":
        out.raw(json.dumps(_as_json(state), indent=2) + "\n")
    elif state is None:
        out.result("No apply holds the lock.")
    else:
        out.results(_lines(state))
    return ExitCode.OK
