"""One module per command: `add_arguments(parser)`, `Options.from_args(namespace)` (typed
options) and `run(options) -> int`. `cli.build_parser` wires them; nothing here parses argv."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    module: ModuleType
    connects: bool = True  # takes the server options
    parallel: bool = True  # takes --parallelism

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.module.add_arguments(parser)

    def runner(self) -> Callable[[argparse.Namespace], int]:
        module = self.module

        def run(ns: argparse.Namespace) -> int:
            # Looked up at call time so tests can replace a command's run().
            return int(module.run(module.Options.from_args(ns)))

        return run


def all_commands() -> list[Command]:
    from reconciler.commands import (
        accounts,
        apply,
        completion,
        diff,
        history,
        import_,
        init,
        lock,
        plan,
        report,
        schema,
        show,
        unlock,
        validate,
        verify,
    )

    return [
        Command("validate", "check manifests offline (schema and cross-file rules)", validate,
                connects=False),
        Command("plan", "read live accounts and show what apply would change", plan),
        Command("show", "print a saved plan (no server contact)", show, connects=False),
        Command("diff", "what a change to the manifests does, from git alone (no server)",
                diff, connects=False),
        Command("apply", "make the server match the manifests, or apply a saved plan", apply),
        Command("verify", "check that every compartment carries its patient's accounts", verify),
        Command("report", "the access review: who can see which tenant's records (report access)",
                report),
        Command("import", "print a Tenant manifest of an account's live members", import_,
                parallel=False),
        Command("accounts", "print a resource's accounts, one reference per line", accounts,
                parallel=False),
        Command("lock", "show who holds the apply lock (lock status)", lock, parallel=False),
        Command("force-unlock", "remove a stale apply lock", unlock, parallel=False),
        Command("history", "the last applies, from the AuditEvents the tool writes", history,
                parallel=False),
        Command("schema", "print the JSON Schema of manifests or plans", schema, connects=False),
        Command("completion", "print a shell completion script (bash, zsh or fish)", completion,
                connects=False),
        Command("init", "write a starter tenants/ directory, schema, pre-commit and CI files",
                init, connects=False),
    ]  # fmt: skip
