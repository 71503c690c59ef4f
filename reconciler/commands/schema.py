"""`reconciler schema [tenant|plan|access-report]`: print a JSON Schema the tool ships (for editors
and CI)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from reconciler.errors import ExitCode
from reconciler.schemas import load_schema
from reconciler.views.output import Output


@dataclass(frozen=True)
class Options:
    name: str

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(name=ns.name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        choices=("tenant", "plan", "access-report"),
        default="tenant",
        help="(default: tenant)",
    )


def run(options: Options) -> int:
    Output().raw(json.dumps(load_schema(f"{options.name}.schema.json"), indent=2) + "\n")
    return ExitCode.OK
