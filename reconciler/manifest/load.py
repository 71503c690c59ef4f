"""Tenant manifests: files → schema-checked YAML documents → Tenant objects, with locations."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from reconciler import phi
from reconciler.errors import ManifestError
from reconciler.manifest.explain import explain
from reconciler.manifest.rules import cross_file_problems
from reconciler.manifest.schema_errors import schema_errors
from reconciler.manifest.tenants import to_tenant
from reconciler.model import ManifestSet, Tenant
from reconciler.suggest import did_you_mean
from reconciler.yamlsafe import Document, PathKey, YamlProblem, load_documents, read_text

MANIFEST_SUFFIXES = (".yaml", ".yml")
DEFAULT_PATHS = ["tenants/"]  # what commands read when given no PATH (design section 2)


def discover(paths: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Expand file and directory arguments into manifest files, sorted by path in each dir."""
    files: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                (p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES),
                key=lambda p: p.as_posix(),
            )
            if not found:
                problems.append(f"{raw}: error: no manifest files (*.yaml, *.yml) in directory")
            root = path.resolve()
            for candidate in found:
                if candidate.is_symlink() and not candidate.resolve().is_relative_to(root):
                    # A link out of the manifests tree (to /etc/shadow, say) is never read:
                    # its lines would end up in error messages.
                    problems.append(
                        f"{candidate.as_posix()}: error: a link to a file outside {raw}; not read"
                    )
                elif candidate.is_file():
                    files.append(candidate)
                elif not candidate.is_dir():  # a dangling link, a socket, …: say so, not skip
                    problems.append(f"{candidate.as_posix()}: error: not a readable file")
        elif path.exists():
            files.append(path)
        else:
            problems.append(f"{raw}: error: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


def _problem(file: str, doc: Document | None, path: PathKey, message: str) -> str:
    line, column = doc.position(path) if doc is not None else (1, 1)
    return f"{file}:{line}:{column}: error: {format_path(path)}: {message}"


def load_manifests(paths: Sequence[str]) -> ManifestSet:
    """Load and validate every manifest; raise ManifestError listing every problem found."""
    files, problems = discover(paths)
    tenants: list[Tenant] = []
    digest = hashlib.sha256()
    for file in files:
        name = file.as_posix()
        try:
            raw, text = read_text(file)
            documents = load_documents(text)
        except YamlProblem as exc:
            problem = f"{name}:{exc.line}:{exc.column}: error: {exc.message}"
            problems.append(f"{problem}\n{exc.excerpt}" if exc.excerpt else problem)
            continue
        digest.update(raw)
        if not documents:
            problems.append(f"{name}:1:1: error: file holds no YAML documents")
            continue
        for doc in documents:
            protect_selected_values(doc.data)  # before any error can quote one
            errors = _schema_problems(name, doc)
            if errors:
                problems.extend(errors)
                continue
            tenants.append(to_tenant(name, doc))
    problems.extend(cross_file_problems(tenants))
    if problems:
        raise ManifestError(problems)
    return ManifestSet(
        tenants=tuple(tenants),
        files=tuple(f.as_posix() for f in files),
        digest="sha256:" + digest.hexdigest(),
    )


def _strings(node: object) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def protect_selected_values(data: object) -> None:
    """Under `--redact`: the values a manifest selects people by (patient and member ids,
    identifier values, search values) are hashed wherever they appear alone in an output line
    (phi.py) — taken from the raw document, so an invalid one is covered too."""
    if not phi.enabled() or not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
        return
    spec = data["spec"]
    grants = spec.get("access") if isinstance(spec.get("access"), list) else []
    members = [g.get("members") for g in grants if isinstance(g, dict)]
    found: list[str] = []
    for text in _strings([spec.get("patients"), members]):
        if "|" in text:
            found.append(text.split("|", 1)[1])
        elif "=" in text:  # a search: its values
            for pair in text.split("&"):
                found += pair.partition("=")[2].split(",")
        elif "/" in text:
            found.append(text.rsplit("/", 1)[1])
    phi.protect(v.strip() for v in found if v.strip())


def _schema_problems(file: str, doc: Document) -> list[str]:
    found: list[tuple[tuple[int, int], str]] = []  # sorted by line and column at the end

    def add(path: PathKey, message: str) -> None:
        found.append((doc.position(path), _problem(file, doc, path, message)))

    for error in schema_errors(doc.data):
        if error.validator == "additionalProperties":
            # Every unknown key of a block, each at its own line (`membrship` and
            # `propogate` in one spec are two problems, not one).
            allowed = set(error.schema.get("properties", {}))
            known = ", ".join(sorted(allowed))
            base: PathKey = tuple(error.absolute_path)
            for key in sorted(k for k in error.instance if k not in allowed):
                hint = did_you_mean(str(key), allowed)
                add((*base, key), f"unknown key {key!r}{hint} (allowed: {known})")
            continue
        path, message = explain(error)
        add(path, message)
    return [text for _, text in sorted(found, key=lambda item: item[0])]
