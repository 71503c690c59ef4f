"""The package's import structure: no circles, nothing imports a layer above its own, and the
two edges (the client and the sandbox) never import each other or the tool."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"

# Lowest first: a module may import its own layer and the layers before it.
LAYERS: list[tuple[str, ...]] = [
    ("reconciler", "reconciler.errors", "reconciler.clock", "reconciler.logs",
     "reconciler.model", "reconciler.yamlsafe", "reconciler.schemas", "reconciler.scrub",
     "reconciler.phi"),
    ("reconciler.medplum", "reconciler.sandbox"),
    ("reconciler.manifest",),
    ("reconciler.plan",),
    ("reconciler.apply", "reconciler.report"),
    ("reconciler.connect", "reconciler.importer"),
    ("reconciler.views",),
    ("reconciler.commands",),
    ("reconciler.cli", "reconciler.__main__"),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every `reconciler…` module this file imports, at any depth (lazy imports count)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("reconciler")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reconciler"):
            assert node.module is not None
            for alias in node.names:  # `from reconciler.commands import plan` names a module
                sub = f"{node.module}.{alias.name}"
                found.add(
                    sub
                    if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists()
                    or (PACKAGE.parent / sub.replace(".", "/")).is_dir()
                    else node.module
                )
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    best = (-1, -1)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), index))
    assert best[1] >= 0, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def test_every_module_is_in_a_layer_and_imports_nothing_above_it() -> None:
    upward = [
        f"{mod} (layer {layer(mod)}) imports {dep} (layer {layer(dep)})"
        for mod, deps in graph().items()
        for dep in deps
        if layer(dep) > layer(mod)
    ]
    assert upward == []


def test_the_client_and_the_sandbox_are_edges() -> None:
    for mod, deps in graph().items():
        if mod.startswith("reconciler.medplum"):
            assert all(d.startswith(("reconciler.medplum", "reconciler.errors",
                                     "reconciler.logs", "reconciler.scrub")) for d in deps), (mod, deps)  # fmt: skip
        if mod.startswith("reconciler.sandbox"):
            # The sandbox emulates the server: it shares no code with the tool it is tested by.
            assert all(d.startswith("reconciler.sandbox") for d in deps), (mod, deps)


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if dep not in edges:
                continue
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif state.get(dep) is None:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(edges):
        if state.get(module) is None:
            visit(module, [module])
    return cycles


def test_no_import_circles() -> None:
    assert find_cycles(graph()) == []


def test_the_checkers_can_fail() -> None:
    # A circle of three modules is found; an import from the plan layer into a command is
    # upward; lazy (function-level) imports are seen.
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert layer("reconciler.plan.build") < layer("reconciler.commands.plan")
    assert "reconciler.sandbox.server" in imports_of(PACKAGE / "connect.py")  # a lazy import
