"""Old home of :mod:`rsvit.utils.atomic`; its names still import from here, with a warning."""

from __future__ import annotations

import warnings
from typing import Any

from rsvit.utils import atomic as _moved


def __getattr__(name: str) -> Any:
    if name in _moved.__all__:
        warnings.warn(
            f"rsvit.atomic.{name} moved to rsvit.utils.atomic.{name}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_moved, name)
    raise AttributeError(f"module 'rsvit.atomic' has no attribute {name!r}")
