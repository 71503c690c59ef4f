"""`reconciler diff --base REF [PATH…]`: what a change to the manifests does — tenants, accounts,
membership modes, selectors, grants and members — from git alone. No server, no credential:
what a pull request's job posts for review of the access half (design section 11)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.errors import ExitCode
from reconciler.manifest import DEFAULT_PATHS, load_manifests
from reconciler.manifest.diff import diff_manifests
from reconciler.manifest.gitbase import manifests_at
from reconciler.views.diff import DIFF_VIEWS


@dataclass(frozen=True)
class Options:
    base: str
    paths: tuple[str, ...]
    format: str
    detailed_exitcode: bool

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(
            base=ns.base,
            paths=tuple(ns.paths or DEFAULT_PATHS),
            format=ns.format,
            detailed_exitcode=ns.detailed_exitcode,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="manifest files or directories (default: tenants/)"
    )
    parser.add_argument(
        "--base",
        required=True,
        metavar="REF",
        help="the git revision to compare with (a pull request's base: origin/main)",
    )
    parser.add_argument(
        "--format", choices=tuple(DIFF_VIEWS), default="text", help="(default: text)"
    )
    parser.add_argument(
        "--detailed-exitcode", action="store_true", help="exit 2 when the manifests differ"
    )


def run(options: Options) -> int:
    base, name = manifests_at(options.base, options.paths)
    head = load_manifests(options.paths)
    diff = diff_manifests(base, head, base_name=name)
    DIFF_VIEWS[options.format]().diff(diff)
    if options.detailed_exitcode and not diff.empty:
        return ExitCode.CHANGES
    return ExitCode.OK
