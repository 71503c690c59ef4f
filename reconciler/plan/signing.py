"""Saved plans are always signed (design section 11): HMAC-SHA256 over the plan digest, keyed
by `RECONCILER_PLAN_KEY` — in CI, where it is required — or else by a per-user key file made
on first use (mode 0600, in the user's config directory, its path said once). So a plan file
edited on a laptop, digest recomputed and all, is refused by `apply` like one edited in CI."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from reconciler import scrub
from reconciler.errors import PlanFileError

KEY_VARIABLE = "RECONCILER_PLAN_KEY"
APP_DIR = "medplum-tenancy-reconciler"


@dataclass(frozen=True)
class PlanKey:
    key: bytes
    source: str  # "RECONCILER_PLAN_KEY", or the key file's path
    created: bool = False  # the key file was made by this run


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / APP_DIR / "plan.key"


def plan_key(*, create: bool, purpose: str) -> PlanKey:
    """The key that signs and checks saved plans. `purpose` names the action in errors."""
    value = os.environ.get(KEY_VARIABLE)
    if value:
        return PlanKey(value.encode(), KEY_VARIABLE)
    if in_ci():
        raise PlanFileError(
            f"{purpose} under CI=true needs {KEY_VARIABLE} (the key the plan is signed with); "
            "nothing was changed"
        )
    path = key_file()
    try:
        key = path.read_bytes().strip()
        scrub.register(key.decode(errors="replace"))
        if path.stat().st_mode & 0o077:
            raise PlanFileError(
                f"the plan-signing key {path} is readable by others; make it private "
                "(chmod 600) or set RECONCILER_PLAN_KEY"
            )
        return PlanKey(key, str(path))
    except FileNotFoundError:
        if not create:
            raise PlanFileError(
                f"{purpose} needs the plan-signing key {path}, which this user does not have: "
                f"the plan was made by another user or machine; plan again here, or set "
                f"{KEY_VARIABLE} to the key it was signed with; nothing was changed"
            ) from None
    except OSError as exc:
        raise PlanFileError(f"cannot read the plan-signing key {path}: {exc.strerror}") from None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another run made it meanwhile
        return plan_key(create=False, purpose=purpose)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    scrub.register(key.decode())
    return PlanKey(key, str(path), created=True)


def sign(digest: str, key: bytes) -> str:
    return "hmac-sha256:" + hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()
