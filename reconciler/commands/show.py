"""`reconciler show PLANFILE`: render a saved plan without contacting any server — what CI
posts for reviewers, and then applies, byte for byte the same file."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler import phi
from reconciler.errors import ExitCode
from reconciler.plan.planfile import load_plan
from reconciler.plan.render import redact
from reconciler.views.plan import PLAN_VIEWS, plan_view


@dataclass(frozen=True)
class Options:
    plan_file: str
    format: str
    redact: bool

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(plan_file=ns.plan_file, format=ns.format, redact=ns.redact)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plan_file", metavar="PLANFILE", help="a plan saved with plan --out")
    parser.add_argument(
        "--format", choices=tuple(PLAN_VIEWS), default="text", help="(default: text)"
    )


def run(options: Options) -> int:
    key = phi.current_key() if options.redact else b""
    plan = load_plan(options.plan_file)  # checked: schema and digest; no server is contacted
    plan_view(options.format).plan(redact(plan, key) if options.redact else plan)
    return ExitCode.OK
