"""Command line: parse, run one command, and the one error boundary that maps exceptions to a
one-line message and an exit code (commands return `ExitCode`s and never exit themselves)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from reconciler import __version__, phi, scrub
from reconciler.commands.redaction import redaction_key
from reconciler.errors import (
    ExitCode,
    ManifestError,
    PlanError,
    ReconcilerError,
    ResolveError,
    UsageError,
)
from reconciler.plan.render import plural
from reconciler.suggest import did_you_mean

Run = Callable[[argparse.Namespace], int]


_CHOICE = re.compile(r"invalid choice: '(?P<word>[^']*)' \(choose from (?P<choices>.*)\)$")


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors; 2 means "changes" here, so raise instead — with a
    "did you mean" for a mistyped command, flag or choice."""

    _argv: list[str] = []  # what main() parses, to find the command whose flags to suggest

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}{self._hint(message)}")

    def _hint(self, message: str) -> str:
        choice = _CHOICE.search(message)
        if choice:
            choices = re.findall(r"'([^']*)'", choice["choices"])
            return did_you_mean(choice["word"], choices)
        if message.startswith("unrecognized arguments: "):
            flags = [a for a in message.split(": ", 1)[1].split() if a.startswith("-")]
            known = _flags_of(self, _Parser._argv)
            for flag in flags:
                hint = did_you_mean(flag.split("=", 1)[0], known)
                if hint:
                    return hint if len(flags) == 1 else f"{hint.removesuffix('?')} for {flag}?"
        return ""


def _flags_of(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """The flags of the (sub)command `argv` names: the deepest command path its words reach
    in the parser's model (the one completion is generated from)."""
    from reconciler.views import completion

    nodes = completion.model(parser)
    at = completion.ROOT
    for word in argv:
        deeper = word if at == completion.ROOT else f"{at} {word}"
        if word in nodes[at].words and deeper in nodes:
            at = deeper
    return nodes[at].flags


def build_parser() -> argparse.ArgumentParser:
    from reconciler.commands import all_commands, sandbox
    from reconciler.commands._args import add_log_options, add_server_options

    parser = _Parser(
        prog="reconciler",
        description="Declarative tenant membership (meta.accounts) for Medplum.",
    )
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def make(
        parent: argparse._SubParsersAction[_Parser], name: str, run: Run | None, help_text: str
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        if run is not None:
            p.set_defaults(run=run)
        add_log_options(p)
        return p

    for command in all_commands():
        p = make(sub, command.name, command.runner(), command.help)
        command.add_arguments(p)
        if command.connects:
            add_server_options(p, parallelism=command.parallel)
    sandbox.add_group(make(sub, "sandbox", None, "the local Medplum-compatible server"), make)
    parser.set_defaults(root_parser=parser)  # what `completion` generates its scripts from
    return parser


def _print_error(line: str) -> None:
    print(scrub.scrub(line), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    from reconciler import logs, memory

    memory.one_malloc_arena()  # before any thread: each would grow an arena of its own

    try:
        _Parser._argv = list(sys.argv[1:] if argv is None else argv)
        options = build_parser().parse_args(argv)
    except UsageError as exc:
        _print_error(f"Error: {exc}")
        return ExitCode.ERROR
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    if options.no_color:
        os.environ["NO_COLOR"] = "1"  # plans check it too (render.use_color)
    logs.configure(options.log_format, options.verbose - options.quiet, color=not options.no_color)
    scrub.register_environment()
    try:
        if getattr(options, "redact", False):  # before any work: under CI the key is required
            phi.enable(redaction_key())
        return int(options.run(options))
    except ManifestError as exc:
        for problem in exc.problems:
            _print_error(problem)
        _print_error(f"Error: {plural(len(exc.problems), 'problem')} found in the manifests.")
        return ExitCode.ERROR
    except ResolveError as exc:
        for problem in exc.problems:
            _print_error(problem)
        what = "selector or account" if len(exc.problems) == 1 else "selectors or accounts"
        _print_error(f"Error: {len(exc.problems)} {what} did not resolve; nothing was changed.")
        return ExitCode.ERROR
    except PlanError as exc:
        for problem in exc.problems:
            _print_error(problem)
        _print_error(f"Error: the plan was refused ({plural(len(exc.problems), 'problem')}); "
                     "nothing was changed.")  # fmt: skip
        return ExitCode.ERROR
    except ReconcilerError as exc:  # client errors included: one tree (reconciler.errors)
        _print_error(f"Error: {exc}")
        return ExitCode.ERROR
    except KeyboardInterrupt:
        _print_error("Interrupted.")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return ExitCode.ERROR
    except Exception as exc:  # the one place an unexpected error becomes a short message
        fd, crash = tempfile.mkstemp(prefix="reconciler-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write(scrub.scrub(traceback.format_exc()))
        _print_error(f"Error: unexpected {type(exc).__name__}; details written to {crash}")
        return ExitCode.ERROR
    finally:
        phi.disable()  # one run's key and values: main may be called again in one process
