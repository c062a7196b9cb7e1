"""No import circle inside ``include/qdrant_migration``.

The imports are read from the source with ``ast`` (nothing is imported), every kind
counted: at module level, under ``if TYPE_CHECKING:``, and inside functions. A circle
closed by a function-level or TYPE_CHECKING import runs, but it still ties two modules
into one unit that cannot be read, tested or moved alone: the goal is none of any kind.
A package's ``__init__`` counts only where it is imported by name
(``from include.qdrant_migration.providers import X``), not as the implicit parent of
its submodules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "qdrant_migration"

#: Where an import statement sits.
MODULE, TYPE_ONLY, FUNCTION = "module level", "TYPE_CHECKING", "function level"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, where: str) -> Iterator[tuple[list[str], str]]:
    """``(candidate module names, where)`` of every import statement under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            yield [alias.name for alias in child.names], where
        elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
            # ``from a.b import c``: a.b itself, and a.b.c when c is a submodule.
            yield [child.module, *(f"{child.module}.{a.name}" for a in child.names)], where
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _imports(child, FUNCTION)
        elif isinstance(child, ast.If) and _is_type_checking(child.test) and where == MODULE:
            for branch in child.body:
                yield from _imports(ast.Module(body=[branch], type_ignores=[]), TYPE_ONLY)
            for branch in child.orelse:
                yield from _imports(ast.Module(body=[branch], type_ignores=[]), MODULE)
        else:
            yield from _imports(child, where)


def import_graph() -> dict[str, dict[str, str]]:
    """``{importer: {imported: where}}`` for the package's own modules; the first kind
    found wins in the order module level, TYPE_CHECKING, function level."""
    known = modules()
    rank = {MODULE: 0, TYPE_ONLY: 1, FUNCTION: 2}
    graph: dict[str, dict[str, str]] = {name: {} for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for candidates, where in _imports(tree, MODULE):
            for target in candidates:
                if target not in known or target == name:
                    continue
                kept = graph[name].get(target)
                if kept is None or rank[where] < rank[kept]:
                    graph[name][target] = where
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def describe(graph: dict[str, dict[str, str]], component: list[str]) -> str:
    members = set(component)
    arrows = [
        f"  {a} -> {b} ({where})"
        for a in component
        for b, where in sorted(graph[a].items())
        if b in members
    ]
    return "\n".join(arrows)


def test_the_graph_sees_the_packages_imports() -> None:
    """The reader finds imports of every kind (a broken reader would find no circle)."""
    graph = import_graph()
    assert len(graph) > 40
    estimate = graph["include.qdrant_migration.estimate"]
    assert estimate["include.qdrant_migration.providers"] == MODULE
    assert estimate["include.qdrant_migration.spec"] == MODULE
    assert cycles({"a": {"b": MODULE}, "b": {"c": FUNCTION}, "c": {"a": TYPE_ONLY}}) == [
        ["a", "b", "c"]
    ]


def test_no_import_cycle_inside_the_package() -> None:
    graph = import_graph()
    found = cycles(graph)
    by_kind = {
        kind: sum(where == kind for edges in graph.values() for where in edges.values())
        for kind in (MODULE, TYPE_ONLY, FUNCTION)
    }
    assert not found, (
        f"Import circles (imports inside the package by kind: {by_kind}):\n"
        + "\n\n".join(describe(graph, c) for c in found)
        + "\nMove what both sides need to a module both can import, one way."
    )
