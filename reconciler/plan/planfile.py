"""Saved plans: written atomically with mode 0600 (they hold patient identifiers, PHI), loaded
with schema and digest checks so an edited or corrupt plan is refused with one line."""

from __future__ import annotations

import json
import os
import tempfile
from functools import cache
from pathlib import Path

import jsonschema

from reconciler.errors import PlanFileError
from reconciler.model import Plan
from reconciler.plan.jsonform import FORMAT_VERSION, digest_of, plan_from_json, write_plan_json
from reconciler.schemas import load_schema

MAX_PLAN_BYTES = 512 * 1024 * 1024


def save_plan(plan: Plan, path: str, *, key: bytes | None = None) -> None:
    target = Path(path)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        # Writing then renaming over /dev/stdout (a link) would replace it with a file.
        raise PlanFileError(
            f"cannot write plan {path}: not a regular file (use --format json for stdout)"
        )
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise PlanFileError(f"cannot write plan {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write_plan_json(plan, fh, key=key)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise PlanFileError(f"cannot write plan {path}: {exc.strerror or exc}") from None


def looks_like_plan(path: str) -> bool:
    """A single JSON file whose top-level mapping has `format_version` is a saved plan."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        with p.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and b'"format_version"' in head


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema("plan.schema.json"))


def load_plan(path: str) -> Plan:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_PLAN_BYTES:
            raise PlanFileError(f"{path}: plan file is larger than {MAX_PLAN_BYTES:,} bytes")
        raw = p.read_bytes()
    except OSError as exc:
        raise PlanFileError(f"{path}: cannot read plan: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PlanFileError(f"{path}: not a readable plan (invalid JSON: {exc})") from None
    if not isinstance(data, dict):
        raise PlanFileError(f"{path}: not a plan (expected a JSON object)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise PlanFileError(
            f"{path}: unsupported plan format_version {version!r} (this reconciler reads "
            f"{FORMAT_VERSION!r})"
        )
    error = next(iter(sorted(_validator().iter_errors(data), key=lambda e: list(e.path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise PlanFileError(f"{path}: corrupt plan: {where}: {error.message[:200]}")
    if data["plan_digest"] != digest_of(data):
        raise PlanFileError(
            f"{path}: plan_digest does not match its content; the plan was edited or corrupted "
            "(create a new one with `reconciler plan --out`)"
        )
    return plan_from_json(data)
