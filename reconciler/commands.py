"""The commands. Each takes the parsed options and returns an exit code; output goes through
print() to stdout (results) or stderr (messages); cli.main owns the error boundary."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from reconciler.errors import UsageError
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


def accounts(options: argparse.Namespace) -> int:
    from reconciler.connect import connect
    from reconciler.medplum.accounts import get_resource_accounts

    ref = options.reference
    if ref.count("/") != 1 or not all(ref.split("/")):
        raise UsageError(f"expected a reference Type/id, got {ref!r}")
    rtype, rid = ref.split("/")
    with connect(options.server) as conn:
        resource = conn.client.read_resource(rtype, rid)
    for account in get_resource_accounts(resource):
        print(account)
    return 0


def register(add: AddCommand) -> None:
    p = add("validate", validate, "check manifests offline (schema and cross-file rules)")
    p.add_argument("paths", nargs="*", metavar="PATH")

    p = add("accounts", accounts, "print a resource's accounts, one reference per line")
    p.add_argument("reference", metavar="REF", help="Type/id, e.g. Patient/123")
