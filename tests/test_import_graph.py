"""The import graph of ``src/rsvit``, read statically (every import statement, function-level ones too).

Imports under ``if TYPE_CHECKING:`` are left out: they never run. The checks are that ``rsvit.weights``
never imports ``rsvit.models`` (models register their converters with weights, not the other way round),
that no two packages import each other in a circle (deprecated re-export shims, which import the new
places by design, are left out), and that the modules inside the packages in ``MODULE_ACYCLIC`` do not
either. A failure prints the graph it found.
"""

from __future__ import annotations

from import_graph import MODULES, SRC, describe, find_cycle, import_graph, imported_modules, package_of

# Packages whose modules must not import each other in a circle.
MODULE_ACYCLIC = ("models", "ops", "structures", "weights")

# Old module paths kept as deprecated shims; they import their new homes (e.g. the one CLI) by design.
DEPRECATED_SHIMS = (
    "rsvit.tasks.cli",
    "rsvit.tasks.runner",
    "rsvit.tasks.seg_runner",
    "rsvit.tasks.change_runner",
    "rsvit.tasks.regression_runner",
)


def test_weights_never_imports_models() -> None:
    offending = [
        f"{MODULES[module].relative_to(SRC)}:{line} imports {target}"
        for module in MODULES
        if package_of(module) == "weights"
        for target, line in imported_modules(module, MODULES[module])
        if package_of(target) == "models"
    ]
    assert not offending, "rsvit.weights must not import rsvit.models:\n" + "\n".join(offending)


def test_packages_import_each_other_without_cycles() -> None:
    assert all(shim in MODULES for shim in DEPRECATED_SHIMS)  # a shim removed: drop it from the list
    graph = import_graph(package_of, keep=lambda module: module not in DEPRECATED_SHIMS)
    assert "weights" in graph["models"] and "models" in graph["timm_models"]  # the graph was read at all
    assert {"data", "viz", "tasks", "cli", "inference", "metrics"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle between packages {' -> '.join(cycle)}; graph:\n{describe(graph)}"


def test_modules_of_the_checked_packages_import_each_other_without_cycles() -> None:
    graph = import_graph(lambda module: module, keep=lambda module: package_of(module) in MODULE_ACYCLIC)
    assert "rsvit.models.spec" in graph["rsvit.models.classifier"]
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle between modules {' -> '.join(cycle)}; graph:\n{describe(graph)}"


def test_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
