"""The key behind `--redact` (design section 10): RECONCILER_REDACT_KEY, else a random key for
this run — except under CI=true, where hashes must be comparable across runs and a missing
key is an error rather than a silent change of meaning."""

from __future__ import annotations

import os
import secrets

from reconciler.errors import UsageError

KEY_VARIABLE = "RECONCILER_REDACT_KEY"


def redaction_key() -> bytes:
    value = os.environ.get(KEY_VARIABLE)
    if value:
        return value.encode()
    if os.environ.get("CI", "").lower() == "true":
        raise UsageError(
            f"--redact under CI=true needs {KEY_VARIABLE} (a secret of the CI environment), so "
            "redacted plans can be compared across runs and cannot be reversed by guessing"
        )
    return secrets.token_bytes(32)
