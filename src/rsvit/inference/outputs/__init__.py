"""Output kinds of the raster engine: how the windows of a task become files.

* :mod:`.dense_classes` -- class maps (segmentation, change), optional probabilities and polygons;
* :mod:`.dense_values` -- value maps (regression: heights, depths);
* :mod:`.base` -- the interface a new kind implements (oriented boxes, instance masks...);
* :mod:`.registry` -- task name -> kind, filled by each kind's ``@register_output``.

Every module of this package other than ``base``, ``registry`` and ``dense`` (the shared dense plumbing)
is a kind and is imported on the first lookup: adding a kind is adding a file. The kinds import
``base`` and ``registry``, never this package, so the lookup cannot form an import cycle.
"""

from __future__ import annotations

import importlib
import pkgutil

from rsvit.inference.outputs.base import ModelFacts, OutputRequest, Products, RasterOutput, WindowSink
from rsvit.inference.outputs.registry import register_output, registered_output, registered_tasks

__all__ = [
    "ModelFacts",
    "OutputRequest",
    "Products",
    "RasterOutput",
    "WindowSink",
    "kind_modules",
    "output_for_task",
    "raster_tasks",
    "register_output",
]

_NOT_KINDS = frozenset({"base", "registry", "dense"})
_loaded = False


def kind_modules() -> list[str]:
    """The modules of this package that define output kinds, in name order."""
    return [
        f"{__name__}.{info.name}"
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name)
        if not info.name.startswith("_") and info.name not in _NOT_KINDS
    ]


def _load_kinds() -> None:
    global _loaded
    if not _loaded:
        for module in kind_modules():
            importlib.import_module(module)
        _loaded = True


def output_for_task(task: str) -> type[RasterOutput] | None:
    """The output kind registered for ``task``, or ``None`` when predict-raster cannot map it."""
    _load_kinds()
    return registered_output(task)


def raster_tasks() -> tuple[str, ...]:
    """Every task predict-raster can map: this package's kinds in name order, then any others."""
    _load_kinds()
    order = {module: i for i, module in enumerate(kind_modules())}

    def rank(task: str) -> int:
        kind = registered_output(task)
        return order.get(kind.__module__, len(order)) if kind is not None else len(order)

    return tuple(sorted(registered_tasks(), key=rank))  # stable: a kind's own task order is kept
