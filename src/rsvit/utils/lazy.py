"""Package namespaces whose names are imported on first use.

Importing torch, Lightning or GDAL costs seconds; packages that re-export names from heavy modules
declare them in a table instead, so ``rsvit --help`` and ``import rsvit.<package>`` stay fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Returns ``(__getattr__, __dir__)`` for a package that re-exports ``exports`` lazily.

    Args:
        package: the package's ``__name__``, used in error messages.
        exports: public name -> module that defines it.
        namespace: the package's ``globals()``; a resolved name is cached there so later lookups are
            plain attribute reads.
    """

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return getattr_, dir_
