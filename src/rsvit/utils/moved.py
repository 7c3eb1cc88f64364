"""Old module paths kept importable while code and notebooks catch up.

One import hook answers for every old path of a package: importing it warns with a
:class:`DeprecationWarning` naming the new path and hands back the new module object itself, so names,
private helpers and monkeypatching behave as before. Packages declare their table of moves and call
:func:`install` with it.
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

__all__ = ["OldPathFinder", "install"]


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


def install(moves: Mapping[str, str]) -> OldPathFinder:
    """Adds (once) the finder for ``moves`` after the regular finders, so real modules always win."""
    for finder in sys.meta_path:
        if isinstance(finder, OldPathFinder) and finder.moves == dict(moves):
            return finder
    finder = OldPathFinder(moves)
    sys.meta_path.append(finder)
    return finder
