"""Run code right after another package is imported, without importing it ourselves.

``import rsvit`` must stay free of torch and timm (``rsvit --help`` imports it), yet timm should know
rsvit's models as soon as timm is there. :func:`when_imported` calls back at once when the module is
already imported, else right after its import finishes, whoever imports it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

__all__ = ["when_imported"]

Callback = Callable[[ModuleType], None]


def when_imported(name: str, callback: Callback) -> None:
    """Calls ``callback(module)`` once module ``name`` is imported: now if it is, else after its import."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    _FINDER.pending.setdefault(name, []).append(callback)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


class _CallbackLoader(importlib.abc.Loader):
    """Wraps the module's real loader for one import, then puts the real loader back on the module."""

    def __init__(self, loader: importlib.abc.Loader, callbacks: list[Callback]) -> None:
        self.loader = loader
        self.callbacks = callbacks

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        module.__loader__ = self.loader
        try:
            self.loader.exec_module(module)
        except BaseException:
            for callback in self.callbacks:  # the import failed: wait for the next attempt
                when_imported(module.__name__, callback)
            raise
        loaded = sys.modules.get(module.__name__, module)
        for callback in self.callbacks:
            callback(loaded)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: asks the other finders and wraps the loader of the awaited modules."""

    def __init__(self) -> None:
        self.pending: dict[str, list[Callback]] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _CallbackLoader(spec.loader, self.pending.pop(fullname))
        if not self.pending:
            sys.meta_path.remove(self)
        return spec


_FINDER = _PostImportFinder()
