"""`reconciler report access [PATH…]`: the access review — one row per membership and tenant,
what the manifests grant, what is configured, what the server lets each member see (counted on
its behalf) — as HTML, CSV or JSON. Reads only; a project-admin client (only admins may read
memberships and count as another member)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from reconciler import phi
from reconciler.commands._args import add_target_option, server_options
from reconciler.connect import ServerOptions, connect, preflight
from reconciler.errors import ExitCode, UsageError
from reconciler.manifest import DEFAULT_PATHS, load_manifests, select_targets
from reconciler.plan.render import plural
from reconciler.report.build import build_report
from reconciler.views.output import Output
from reconciler.views.progress import Progress
from reconciler.views.report import REPORT_FORMATS, renderers


@dataclass(frozen=True)
class Options:
    what: str
    paths: tuple[str, ...]
    format: str
    out: str | None
    redact: bool
    detailed_exitcode: bool
    parallelism: int
    server: ServerOptions
    targets: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(
            what=ns.what,
            paths=tuple(ns.paths or DEFAULT_PATHS),
            format=ns.format,
            out=ns.out,
            redact=ns.redact,
            detailed_exitcode=ns.detailed_exitcode,
            parallelism=ns.parallelism,
            server=server_options(ns),
            targets=tuple(ns.target),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_option(parser)
    parser.add_argument("what", choices=("access",), help="access: who can see which tenant")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="manifest files or directories")
    parser.add_argument(
        "--format", choices=REPORT_FORMATS, default="html", help="(default: %(default)s)"
    )
    parser.add_argument("--out", metavar="FILE", help="write the report here (default: stdout)")
    parser.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 2 when any row is not ok (the report's own client excepted)",
    )


def run(options: Options) -> int:
    manifests = select_targets(load_manifests(options.paths), options.targets)
    out = Output()
    if options.out and os.path.isdir(options.out):
        raise UsageError(f"--out {options.out} is a directory; give a file name")
    with connect(options.server) as conn:
        me = preflight(conn, need_admin="report access")
        progress = Progress("checking access", unit="memberships")
        try:
            report = build_report(
                conn.client,
                manifests,
                server=conn.target,
                client_name=conn.client.client_id or "",
                this_membership=me.membership if me else None,
                parallelism=options.parallelism,
                progress=lambda done, total: progress.update(done, total=total),
            )
        finally:
            progress.close()
    if options.redact:
        report = report.redacted(lambda value: phi.keyed_hash(phi.current_key(), value))
    else:
        out.message(
            "Note: the report names members (not redacted: reviewers need names); --redact "
            "hashes them, for a CI log or artifact."
        )
    text = renderers()[options.format](report)
    if options.out:
        with open(options.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        out.raw(text)
    counts = report.counts()
    failing = len(report.failing)
    out.message(
        f"Access review: {plural(len(report.memberships), 'membership')} by "
        f"{plural(len(report.header.tenants), 'tenant')}, {plural(len(report.rows), 'row')}: "
        + ", ".join(f"{n:,} {status}" for status, n in counts.items())
        + (f"; written to {options.out}" if options.out else "")
        + f". Report digest {report.digest()}."
    )
    if failing and options.detailed_exitcode:
        return ExitCode.CHANGES
    return ExitCode.OK
