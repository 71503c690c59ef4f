"""`reconciler import --account REF`: a Tenant manifest of an account's live members."""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass

from reconciler import phi
from reconciler.commands._args import server_options
from reconciler.commands.accounts import split_reference
from reconciler.connect import ServerOptions, connect
from reconciler.errors import ExitCode, UsageError
from reconciler.importer import slug, write_manifest
from reconciler.views.output import Output


@dataclass(frozen=True)
class Options:
    account: str
    name: str | None
    identifier_system: str | None
    membership: str
    access: bool
    resource_types: tuple[str, ...]
    server: ServerOptions

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(
            account=ns.account,
            name=ns.name,
            identifier_system=ns.identifier_system,
            membership=ns.membership,
            access=ns.access,
            resource_types=tuple(t for t in (ns.resources or "").split(",") if t),
            server=server_options(ns),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--account", required=True, metavar="REF", help="e.g. Organization/123")
    parser.add_argument("--name", help="tenant name (default: from the account's name)")
    parser.add_argument(
        "--identifier-system",
        metavar="URL",
        help="list patients by their identifier of this system when all have a unique one",
    )
    parser.add_argument(
        "--membership",
        choices=("authoritative", "additive"),
        default="authoritative",
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--resources",
        metavar="TYPE[,TYPE]",
        help="also list the account's current members of these types (spec.resources)",
    )
    parser.add_argument(
        "--access",
        action="store_true",
        help="also list the memberships that see the account (spec.access)",
    )


def run(options: Options) -> int:
    if phi.enabled():
        raise UsageError(
            "import prints a manifest, and a manifest's selectors are the patients' identifiers: "
            "--redact would leave nothing to use; write it to a file (> tenants/x.yaml), not a "
            "CI log"
        )
    split_reference(options.account, "--account to be a reference")
    for rtype in options.resource_types:
        if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", rtype) or rtype == "Patient":
            raise UsageError(
                f"--resources expects resource types other than Patient, got {rtype!r}"
            )
    name = slug(options.name) if options.name else None
    view = Output()
    with connect(options.server) as conn:
        # The manifest is streamed line by line: 100,000 members never sit in one string.
        count, by = write_manifest(
            conn.client,
            options.account,
            sys.stdout,
            name=name,
            identifier_system=options.identifier_system,
            membership=options.membership,
            access=options.access,
            resource_types=options.resource_types,
        )
    sys.stdout.flush()
    view.message(f"Imported {count:,} members of {options.account} (listed by {by}).")
    return ExitCode.OK
