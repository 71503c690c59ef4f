"""The commands. Each takes the parsed options and returns an exit code; output goes through
print() to stdout (results) or stderr (messages); cli.main owns the error boundary."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace

from reconciler.errors import UsageError
from reconciler.manifest import DEFAULT_PATHS, load_manifests
from reconciler.render import plural

AddCommand = Callable[..., argparse.ArgumentParser]


def validate(options: argparse.Namespace) -> int:
    manifests = load_manifests(options.paths or DEFAULT_PATHS)
    print(
        f"{plural(len(manifests.tenants), 'tenant')} in "
        f"{plural(len(manifests.files), 'file')} "
        f"{'is' if len(manifests.tenants) == 1 else 'are'} valid."
    )
    return 0


def accounts(options: argparse.Namespace) -> int:
    from reconciler.connect import connect_options
    from reconciler.medplum.accounts import get_resource_accounts

    ref = options.reference
    if ref.count("/") != 1 or not all(ref.split("/")):
        raise UsageError(f"expected a reference Type/id, got {ref!r}")
    rtype, rid = ref.split("/")
    with connect_options(options) as conn:
        resource = conn.client.read_resource(rtype, rid)
    for account in get_resource_accounts(resource):
        print(account)
    return 0


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def plan(options: argparse.Namespace) -> int:
    from reconciler.connect import connect_options
    from reconciler.planfile import save_plan
    from reconciler.planjson import write_plan_json
    from reconciler.planning import build_plan
    from reconciler.render import RENDERERS, iter_text, redact, use_color

    if options.redact and options.out:
        raise UsageError(
            "--redact cannot be combined with --out: a redacted plan cannot be applied"
        )
    manifests = load_manifests(options.paths or DEFAULT_PATHS)
    with connect_options(options) as conn:
        the_plan, _ = build_plan(
            conn,
            manifests,
            quota_points=None if options.no_estimate else options.quota_points,
            parallelism=options.parallelism,
        )
    if options.max_removals is not None and the_plan.removed > options.max_removals:
        the_plan = replace(
            the_plan,
            warnings=(
                *the_plan.warnings,
                f"the plan removes {the_plan.removed:,} accounts, more than --max-removals "
                f"{options.max_removals:,}; apply will refuse",
            ),
        )
    shown = redact(the_plan) if options.redact else the_plan
    if options.format == "text":
        for line in iter_text(shown, color=use_color(sys.stdout.isatty())):
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    elif options.format == "json":
        write_plan_json(shown, sys.stdout)  # streamed: large plans are never one string
        sys.stdout.flush()
    else:
        _emit(RENDERERS[options.format](shown))
    if options.out:
        save_plan(the_plan, options.out)
        stream = sys.stderr if options.format == "json" else sys.stdout
        print(
            f"\nSaved the plan to {options.out}. To apply exactly these changes, run:\n"
            f"    reconciler apply {options.out}",
            file=stream,
        )
    if options.detailed_exitcode and not the_plan.is_empty:
        return 2
    return 0


def _sandbox_data(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sandbox-data",
        metavar="FILE",
        default=None,
        help="data file of the embedded sandbox (default .reconciler/sandbox.sqlite)",
    )


def import_cmd(options: argparse.Namespace) -> int:
    from reconciler.connect import connect_options
    from reconciler.importer import slug, write_manifest

    ref = options.account
    if ref.count("/") != 1 or not all(ref.split("/")):
        raise UsageError(f"--account expects a reference Type/id, got {ref!r}")
    name = slug(options.name) if options.name else None
    with connect_options(options) as conn:
        count, by = write_manifest(
            conn.client,
            ref,
            sys.stdout,
            name=name,
            identifier_system=options.identifier_system,
            membership=options.membership,
        )
    sys.stdout.flush()
    print(f"Imported {count:,} members of {ref} (listed by {by}).", file=sys.stderr)
    return 0


def register(add: AddCommand) -> None:
    p = add("validate", validate, "check manifests offline (schema and cross-file rules)")
    p.add_argument("paths", nargs="*", metavar="PATH")

    p = add("plan", plan, "read live accounts and show what apply would change")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--out", metavar="FILE", help="save the plan (JSON, mode 0600) for apply")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when there are changes")
    p.add_argument("--redact", action="store_true", help="hash patient ids and identifiers")
    p.add_argument(
        "--max-removals",
        type=int,
        default=None,
        metavar="N",
        help="warn when the plan removes more than N accounts",
    )
    p.add_argument(
        "--quota-points",
        type=int,
        default=50_000,
        metavar="N",
        help="FHIR quota points per minute to assume for the cost estimate (Medplum's default)",
    )
    p.add_argument("--no-estimate", action="store_true", help="skip the quota cost estimate")
    _sandbox_data(p)

    from reconciler import apply_commands

    apply_commands.register(add, _sandbox_data)

    p = add("import", import_cmd, "print a Tenant manifest of an account's live members")
    p.add_argument("--account", required=True, metavar="REF", help="e.g. Organization/123")
    p.add_argument("--name", help="tenant name (default: from the account's name)")
    p.add_argument(
        "--identifier-system",
        metavar="URL",
        help="list patients by their identifier of this system when all have a unique one",
    )
    p.add_argument("--membership", choices=("authoritative", "additive"), default="authoritative")
    _sandbox_data(p)

    p = add("accounts", accounts, "print a resource's accounts, one reference per line")
    p.add_argument("reference", metavar="REF", help="Type/id, e.g. Patient/123")
