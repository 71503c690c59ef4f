"""The commands. Each takes the parsed options and returns an exit code; output goes through
print() to stdout (results) or stderr (messages); cli.main owns the error boundary."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from reconciler.manifest import load_manifests

DEFAULT_PATHS = ["tenants/"]

AddCommand = Callable[..., argparse.ArgumentParser]


def _plural(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def validate(options: argparse.Namespace) -> int:
    manifests = load_manifests(options.paths or DEFAULT_PATHS)
    print(
        f"{_plural(len(manifests.tenants), 'tenant')} in "
        f"{_plural(len(manifests.files), 'file')} "
        f"{'is' if len(manifests.tenants) == 1 else 'are'} valid."
    )
    return 0


def register(add: AddCommand) -> None:
    p = add("validate", validate, "check manifests offline (schema and cross-file rules)")
    p.add_argument("paths", nargs="*", metavar="PATH")
