"""The manifests as a git revision holds them (for `reconciler diff --base REF`): the files under
the given paths at REF, written to a private temporary directory and loaded like any others.
Only regular files are taken (a symbolic link in git is never followed)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from reconciler.errors import ManifestError, UsageError
from reconciler.manifest.load import MANIFEST_SUFFIXES, load_manifests
from reconciler.model import Location, ManifestSet

REGULAR_FILES = ("100644", "100755")


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], capture_output=True, check=False)
    except FileNotFoundError:
        raise UsageError(
            "reconciler diff reads the base from git, and git is not installed"
        ) from None


def _commit(ref: str) -> str:
    if ref.startswith("-"):
        raise UsageError(f"--base {ref!r} is not a git revision")
    inside = _git("rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0:
        raise UsageError("reconciler diff reads the base from git: run it inside the repository")
    found = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if found.returncode != 0:
        raise UsageError(
            f"--base {ref}: no such commit here (in a shallow CI checkout, fetch it first: "
            f"git fetch --depth=1 origin {ref})"
        )
    return found.stdout.decode().strip()


def _files_at(commit: str, paths: Sequence[str]) -> list[str]:
    """Manifest files under `paths` at `commit`, relative to the working directory."""
    listed = _git("ls-tree", "-r", "-z", commit, "--", *paths)
    if listed.returncode != 0:
        raise UsageError(f"git ls-tree failed: {listed.stderr.decode(errors='replace').strip()}")
    files = []
    for record in listed.stdout.decode(errors="surrogateescape").split("\0"):
        if not record:
            continue
        meta, _, name = record.partition("\t")
        mode, kind, _ = meta.split(" ", 2)
        if kind == "blob" and mode in REGULAR_FILES and name.endswith(MANIFEST_SUFFIXES):
            files.append(name)
    return files


def manifests_at(ref: str, paths: Sequence[str]) -> tuple[ManifestSet, str]:
    """(the manifests at `ref`, how to name them: `REF (abc1234)`). No file there: none."""
    commit = _commit(ref)
    name = f"{ref} ({commit[:12]})"
    files = _files_at(commit, paths)
    if not files:
        return ManifestSet(tenants=(), files=(), digest=""), name
    with tempfile.TemporaryDirectory(prefix="reconciler-diff-") as tmp:
        root = Path(tmp)
        for file in files:
            blob = _git("show", f"{commit}:./{file}")
            if blob.returncode != 0:
                raise UsageError(f"git show {ref}:{file} failed")
            target = root / file
            if not target.resolve().is_relative_to(root.resolve()):
                raise UsageError(f"{ref}:{file}: a path outside the manifests; not read")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob.stdout)
        prefix = root.as_posix() + "/"
        try:
            loaded = load_manifests([prefix + f for f in files])
        except ManifestError as exc:  # name the revision, never the temporary directory
            raise ManifestError([f"{ref}:{p.removeprefix(prefix)}" for p in exc.problems]) from None
    return _renamed(loaded, prefix, f"{ref}:"), name


def _renamed(manifests: ManifestSet, prefix: str, to: str) -> ManifestSet:
    def move(location: Location) -> Location:
        return replace(location, file=to + location.file.removeprefix(prefix))

    tenants = tuple(replace(t, location=move(t.location)) for t in manifests.tenants)
    files = tuple(to + f.removeprefix(prefix) for f in manifests.files)
    return replace(manifests, tenants=tenants, files=files)
