"""The modules of rsvit.inference depend on each other one way: no import cycle, not even inside functions.

Edges are read from the source with ``ast`` (module-level and function-level imports alike, by the shared
reader in ``tests/import_graph.py``), plus the one dynamic edge: ``rsvit.inference.outputs`` imports every
output-kind module on first lookup.
"""

from __future__ import annotations

import subprocess
import sys

from import_graph import describe, find_cycle, import_graph
from rsvit.inference.outputs import kind_modules

PACKAGE = "rsvit.inference"


def _edges() -> dict[str, set[str]]:
    """The modules of rsvit.inference and their imports, plus the outputs package's dynamic imports."""
    graph = import_graph(lambda module: module, keep=lambda module: module.startswith(PACKAGE))
    for module in kind_modules():
        graph[f"{PACKAGE}.outputs"].add(module)
    return graph


def test_the_inference_modules_form_no_import_cycle() -> None:
    graph = _edges()
    # The parser sees what it must: the engine's lazy import of the multi-process runner is an edge.
    assert f"{PACKAGE}.distributed" in graph[f"{PACKAGE}.engine"]
    assert f"{PACKAGE}.runner" in graph[f"{PACKAGE}.distributed"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or []) + "\n" + describe(graph)


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
