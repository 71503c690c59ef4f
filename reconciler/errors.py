"""The error hierarchy. The CLI's error boundary turns any of these into one line and exit 1.

ReconcilerError
├── UsageError              bad command line
├── ManifestError           manifests that fail to load or validate (carries every problem)
├── ResolveError            selectors/accounts that do not resolve against the live server
├── PlanError               a plan that would write something unsafe (e.g. fail-open access)
├── PlanFileError           a saved plan that is unreadable, edited, or stale
├── PreflightError          the client cannot do what the command needs (not a project admin)
├── ApplyRefused            apply declined: not approved, guard tripped, lock held
├── ApplyFailed             apply logic: a change that could not be confirmed on the server
├── LockLost                the apply lock can no longer be proven held: the phase ends
└── MedplumError            (reconciler.medplum.errors) anything the client raises
    ├── TransportError      could not reach the server (connect, timeout, bad answer)
    ├── HTTPStatusError     the server said no: status + OperationOutcome text
    │   └── AuthError       401/403 on the token endpoint or after a refresh
    └── JobError            an async job failed, was cancelled or timed out
        └── JobTimeout
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum


class ExitCode(IntEnum):
    """What a command returns; `cli.main` turns every error into one of these too."""

    OK = 0
    ERROR = 1
    CHANGES = 2  # only with --detailed-exitcode: success, and there are changes (or drift)
    INTERRUPTED = 130


class ReconcilerError(Exception):
    """Base class: the message is a complete, one-line, secret-free explanation."""


class UsageError(ReconcilerError):
    pass


class ManifestError(ReconcilerError):
    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems[0] if self.problems else "invalid manifests")


class ResolveError(ReconcilerError):
    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems[0] if self.problems else "selectors did not resolve")


class PlanError(ReconcilerError):
    """The plan would do something the tool never writes; carries every such problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems[0] if self.problems else "the plan was refused")


class PlanFileError(ReconcilerError):
    pass


class PreflightError(ReconcilerError):
    pass


class ApplyRefused(ReconcilerError):
    pass


class ApplyFailed(ReconcilerError):
    """One change could not be confirmed (outcome unknown and the patient differs, a job that
    timed out). Raised and caught inside the executor; the message becomes the change's reason."""


class LockLost(ReconcilerError):
    """Not a failure of one change: once raised, no write starts and the running phase ends."""
