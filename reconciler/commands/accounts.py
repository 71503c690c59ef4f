"""`reconciler accounts REF`: a resource's accounts, one reference per line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.commands._args import server_options
from reconciler.connect import ServerOptions, connect
from reconciler.errors import ExitCode, UsageError
from reconciler.medplum.accounts import get_resource_accounts
from reconciler.medplum.errors import HTTPStatusError
from reconciler.views.output import Output


def split_reference(ref: str, what: str = "a reference") -> tuple[str, str]:
    if ref.count("/") != 1 or not all(ref.split("/")):
        raise UsageError(f"expected {what} Type/id, got {ref!r}")
    rtype, rid = ref.split("/")
    return rtype, rid


@dataclass(frozen=True)
class Options:
    reference: str
    server: ServerOptions

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(reference=ns.reference, server=server_options(ns))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", metavar="REF", help="Type/id, e.g. Patient/123")


def run(options: Options) -> int:
    rtype, rid = split_reference(options.reference)
    with connect(options.server) as conn:
        try:
            resource = conn.client.read_resource(rtype, rid)
        except HTTPStatusError as exc:
            if exc.status not in (404, 410):
                raise
            gone = "was deleted" if exc.status == 410 else "does not exist"
            raise UsageError(f"{rtype}/{rid} {gone} on {conn.target}") from None
    Output().results(get_resource_accounts(resource))
    return ExitCode.OK
