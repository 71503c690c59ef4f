"""`reconciler validate`: schema and cross-file rules, offline."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.errors import ExitCode
from reconciler.manifest import DEFAULT_PATHS, load_manifests
from reconciler.plan.render import plural
from reconciler.views.output import Output


@dataclass(frozen=True)
class Options:
    paths: tuple[str, ...]

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(paths=tuple(ns.paths or DEFAULT_PATHS))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or directories")


def run(options: Options) -> int:
    manifests = load_manifests(options.paths)
    tenants, files = len(manifests.tenants), len(manifests.files)
    Output().result(
        f"{plural(tenants, 'tenant')} in {plural(files, 'file')} "
        f"{'is' if tenants == 1 else 'are'} valid."
    )
    return ExitCode.OK
