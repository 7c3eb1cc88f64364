"""The modules of rsvit.inference depend on each other one way: no import cycle, not even inside functions.

Edges are read from the source with ``ast`` (module-level and function-level imports alike), plus the one
dynamic edge: ``rsvit.inference.outputs`` imports every output-kind module on first lookup.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import rsvit.inference
from rsvit.inference.outputs import kind_modules

PACKAGE = "rsvit.inference"
ROOT = Path(rsvit.inference.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([PACKAGE, *parts])] = path
    return out


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                # the longest known module the import names (``from pkg import submodule`` counts too)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    for module in kind_modules():
        graph[f"{PACKAGE}.outputs"].add(module)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_inference_modules_form_no_import_cycle() -> None:
    graph = _edges(_modules())
    # The parser sees what it must: the engine's lazy import of the multi-process runner is an edge.
    assert f"{PACKAGE}.distributed" in graph[f"{PACKAGE}.engine"]
    assert f"{PACKAGE}.runner" in graph[f"{PACKAGE}.distributed"]
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_an_output_kind_imported_first_still_finds_every_kind() -> None:
    """A spawned rank unpickles the job, importing an output kind before anything else of the engine."""
    code = (
        "import rsvit.inference.outputs.dense_values as values\n"
        "from rsvit.inference.outputs import output_for_task, raster_tasks\n"
        "assert output_for_task('regression') is values.ValueMapOutput\n"
        "print(','.join(raster_tasks()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["segmentation,change,regression,detection"]
