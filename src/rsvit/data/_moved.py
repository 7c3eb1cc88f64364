"""Old module paths of :mod:`rsvit.data`, kept importable while code and notebooks catch up.

The modules themselves moved (``git mv``) into one folder per task family; instead of a file left
behind at every old path, one import hook answers for all of them: importing an old path warns with a
:class:`DeprecationWarning` naming the new one and hands back the new module object itself, so names,
private helpers and monkeypatching all behave as before. A module that was split in two maps to its
family package, which re-exports the public names of both halves.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["MOVED_MODULES", "OldPathFinder", "install"]

MOVED_MODULES: dict[str, str] = {
    "rsvit.data.image_io": "rsvit.data.io",
    "rsvit.data.scene": "rsvit.data.classification.datasets",
    "rsvit.data.transforms": "rsvit.data.classification.transforms",
    "rsvit.data.splits": "rsvit.data.classification.splits",
    "rsvit.data.seg_datasets": "rsvit.data.segmentation",  # split into benchmarks.py and tiling.py
    "rsvit.data.seg_transforms": "rsvit.data.segmentation.transforms",
    "rsvit.data.height": "rsvit.data.regression.datasets",
    "rsvit.data.dota": "rsvit.data.detection.labels",
    "rsvit.data.dota_split": "rsvit.data.detection.split",
    "rsvit.data.dota_eval": "rsvit.metrics.detection",
    "rsvit.data.dota_plot": "rsvit.viz.detection",
    "rsvit.data.change_plots": "rsvit.viz.change",
}


class OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves each old dotted path of ``moves`` to its new module, with a deprecation warning."""

    def __init__(self, moves: Mapping[str, str]) -> None:
        self.moves = dict(moves)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.moves:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        old = module.__name__
        new = self.moves[old]
        # stacklevel 2 skips the import machinery's frames and names the line that imported the old path.
        warnings.warn(f"{old} moved to {new}; import from there", DeprecationWarning, stacklevel=2)
        # The import system returns whatever sits in sys.modules after exec_module: the new module.
        sys.modules[old] = importlib.import_module(new)


def install(moves: Mapping[str, str] = MOVED_MODULES) -> OldPathFinder:
    """Adds (once) the finder for ``moves`` after the regular finders, so real modules always win."""
    for finder in sys.meta_path:
        if isinstance(finder, OldPathFinder) and finder.moves == dict(moves):
            return finder
    finder = OldPathFinder(moves)
    sys.meta_path.append(finder)
    return finder
