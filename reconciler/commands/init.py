"""`reconciler init [DIR]`: a starter repository layout — one commented tenant manifest, the
JSON Schema it names, a pre-commit config and the CI workflow — never over an existing file."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ExitCode, UsageError
from reconciler.schemas import SCHEMA_DIR
from reconciler.views.output import Output

STARTER = Path(__file__).resolve().parent.parent / "starter"
# What is written (relative to DIR) and where it comes from.
FILES = (
    ("tenants/example-clinic.yaml", STARTER / "tenant.yaml"),
    ("schemas/tenant.schema.json", SCHEMA_DIR / "tenant.schema.json"),
    (".pre-commit-config.yaml", STARTER / "pre-commit-config.yaml"),
    (".github/workflows/tenancy.yml", STARTER / "github-actions.yml"),
)


@dataclass(frozen=True)
class Options:
    directory: str

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Options:
        return cls(directory=ns.directory)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", nargs="?", default=".", metavar="DIR",
        help="where to write the starter files (default: the current directory)",
    )  # fmt: skip


def run(options: Options) -> int:
    root = Path(options.directory)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    there = [name for name, _ in FILES if os.path.lexists(root / name)]
    if there:
        raise UsageError(
            f"init would overwrite {', '.join(there)} in {root}; nothing was written (move "
            "them away, or init another directory)"
        )
    for name, source in FILES:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("x", encoding="utf-8") as fh:  # "x": never over a file made meanwhile
            fh.write(source.read_text(encoding="utf-8"))
    out = Output()
    for name, _ in FILES:
        out.result(f"Wrote {(root / name).as_posix()}")
    where = "" if options.directory == "." else f"cd {options.directory} && "
    out.message(
        f"Next: {where}reconciler validate, then reconciler plan (the demo sandbox: "
        "reconciler sandbox seed first)."
    )
    return ExitCode.OK
