"""The import graph of ``src/rsvit``, read statically (every import statement, function-level ones too).

Imports under ``if TYPE_CHECKING:`` are left out: they never run. The checks are that ``rsvit.weights``
never imports ``rsvit.models`` (models register their converters with weights, not the other way round),
that no two packages import each other in a circle (deprecated re-export shims, which import the new
places by design, are left out), and that the modules inside the packages in ``MODULE_ACYCLIC`` do not
either. A failure prints the graph it found.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "rsvit"

# Packages whose modules must not import each other in a circle.
MODULE_ACYCLIC = ("models", "ops", "structures", "weights")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}

# Old module paths kept as deprecated shims; they import their new homes (e.g. the one CLI) by design.
DEPRECATED_SHIMS = (
    "rsvit.tasks.cli",
    "rsvit.tasks.runner",
    "rsvit.tasks.seg_runner",
    "rsvit.tasks.change_runner",
    "rsvit.tasks.regression_runner",
)


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except the bodies of ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                yield child
                yield from _runtime_nodes(child)
            continue
        yield node
        yield from _runtime_nodes(node)


def _imported_modules(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """``(rsvit module, line)`` for each import in the file; ``from pkg import sub`` names ``sub``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
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


def _package(module: str) -> str:
    """``rsvit.models.spec`` -> ``models``; top-level modules (``rsvit.cli``) are their own node."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rsvit"


def _graph(node_of, keep=lambda module: True) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        if not keep(module):
            continue
        source = node_of(module)
        graph.setdefault(source, set())
        for target, _ in _imported_modules(module, path):
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


def _describe(graph: dict[str, set[str]]) -> str:
    return "\n".join(
        f"  {node} -> {', '.join(sorted(targets)) or '-'}" for node, targets in sorted(graph.items())
    )


def test_weights_never_imports_models() -> None:
    offending = [
        f"{MODULES[module].relative_to(SRC)}:{line} imports {target}"
        for module in MODULES
        if _package(module) == "weights"
        for target, line in _imported_modules(module, MODULES[module])
        if _package(target) == "models"
    ]
    assert not offending, "rsvit.weights must not import rsvit.models:\n" + "\n".join(offending)


def test_packages_import_each_other_without_cycles() -> None:
    assert all(shim in MODULES for shim in DEPRECATED_SHIMS)  # a shim removed: drop it from the list
    graph = _graph(_package, keep=lambda module: module not in DEPRECATED_SHIMS)
    assert "weights" in graph["models"] and "models" in graph["timm_models"]  # the graph was read at all
    assert {"data", "viz", "tasks", "cli", "inference", "metrics"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle between packages {' -> '.join(cycle)}; graph:\n{_describe(graph)}"


def test_modules_of_the_checked_packages_import_each_other_without_cycles() -> None:
    graph = _graph(lambda module: module, keep=lambda module: _package(module) in MODULE_ACYCLIC)
    assert "rsvit.models.spec" in graph["rsvit.models.classifier"]
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle between modules {' -> '.join(cycle)}; graph:\n{_describe(graph)}"


def test_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
