"""The import graph of ``src/rsvit``, read statically: every import statement, function-level ones too.

Imports under ``if TYPE_CHECKING:`` are left out: they never run. Shared by the import-graph tests.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "rsvit"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except the bodies of ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                yield child
                yield from runtime_nodes(child)
            continue
        yield node
        yield from runtime_nodes(node)


def imported_modules(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """``(rsvit module, line)`` for each import in the file; ``from pkg import sub`` names ``sub``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            if name == "rsvit" or name.startswith("rsvit."):
                yield name, node.lineno


def package_of(module: str) -> str:
    """``rsvit.models.spec`` -> ``models``; top-level modules (``rsvit.cli``) are their own node."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rsvit"


def import_graph(node_of, keep=lambda module: True) -> dict[str, set[str]]:
    """Edges between ``node_of(module)`` for the modules ``keep`` accepts (self-edges dropped)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        if not keep(module):
            continue
        source = node_of(module)
        graph.setdefault(source, set())
        for target, _ in imported_modules(module, path):
            if keep(target) and node_of(target) != source:
                graph[source].add(node_of(target))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def describe(graph: dict[str, set[str]]) -> str:
    """The graph one node a line, for failure messages."""
    return "\n".join(
        f"  {node} -> {', '.join(sorted(targets)) or '-'}" for node, targets in sorted(graph.items())
    )
