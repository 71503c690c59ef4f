"""Command line: parse, build the parts, run one command, map errors to exit codes.

This is the only module that prints results or decides exit codes; commands return an int.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from reconciler import __version__
from reconciler.errors import ManifestError, ReconcilerError, ResolveError, UsageError
from reconciler.medplum.errors import MedplumError
from reconciler.render import plural

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors; 2 means "changes" here, so raise instead."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument(
        "--server",
        help="Medplum base URL (default: $MEDPLUM_BASE_URL, else the sandbox)",
    )
    group.add_argument(
        "--parallelism",
        type=int,
        default=10,
        metavar="N",
        help="requests in flight (default 10; plan reads use at most 4)",
    )
    group.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="per-request timeout (default 30)"
    )
    group.add_argument("--log-format", choices=("console", "json"), default=None)
    group.add_argument("-v", "--verbose", action="count", default=0)
    group.add_argument("-q", "--quiet", action="count", default=0)


AddCommand = Callable[..., argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    from reconciler import commands, sandbox_commands

    parser = _Parser(
        prog="reconciler",
        description="Declarative tenant membership (meta.accounts) for Medplum.",
    )
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(
        name: str,
        run: Callable[..., int] | None,
        help_text: str,
        *,
        parent: argparse._SubParsersAction[_Parser] = sub,
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        if run is not None:
            p.set_defaults(run=run)
        _common(p)
        return p

    commands.register(add)
    sandbox_commands.register(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from reconciler import logs

    try:
        options = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    logs.configure(options.log_format, options.verbose - options.quiet)
    try:
        return int(options.run(options))
    except ManifestError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(
            f"Error: {plural(len(exc.problems), 'problem')} found in the manifests.",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except ResolveError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        what = "selector or account" if len(exc.problems) == 1 else "selectors or accounts"
        print(
            f"Error: {len(exc.problems)} {what} did not resolve; nothing was changed.",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except (ReconcilerError, MedplumError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as exc:  # the one place an unexpected error becomes a short message
        fd, crash = tempfile.mkstemp(prefix="reconciler-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            traceback.print_exc(file=fh)
        print(
            f"Error: unexpected {type(exc).__name__}; details written to {crash}", file=sys.stderr
        )
        return EXIT_ERROR
