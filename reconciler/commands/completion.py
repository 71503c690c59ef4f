"""`reconciler completion bash|zsh|fish`: print a shell completion script, generated from this
version's argument parser (reconciler/views/completion.py)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.errors import ExitCode
from reconciler.views.completion import SHELLS
from reconciler.views.output import Output


@dataclass(frozen=True)
class Options:
    shell: str
    parser: argparse.ArgumentParser  # the whole command line's (cli.build_parser)

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(shell=ns.shell, parser=ns.root_parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=sorted(SHELLS), help="the shell to complete in")


def run(options: Options) -> int:
    Output().raw(SHELLS[options.shell](options.parser))
    return ExitCode.OK
