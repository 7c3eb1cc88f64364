"""Old home of :class:`~rsvit.models.spec.ModelSpec` and friends, kept so existing imports work (they warn).

``ModelSpec``, ``build_model``, ``save_model``, ``load_model`` and ``task_spec`` live in
:mod:`rsvit.models.spec`; the ``TASK_HEADS`` table gave way to the builders each model module registers
(:func:`rsvit.models.registry.task_heads`).
"""

from __future__ import annotations

import warnings
from typing import Any

from rsvit.models import registry, spec


def __getattr__(name: str) -> Any:
    if name == "TASK_HEADS":
        warnings.warn(
            "rsvit.models.factory.TASK_HEADS is gone; use rsvit.models.registry.task_heads(task) and "
            "task_names()",
            DeprecationWarning,
            stacklevel=2,
        )
        return {task: registry.task_heads(task) for task in registry.task_names()}
    if name in spec.__all__:
        warnings.warn(
            f"rsvit.models.factory.{name} moved to rsvit.models.spec.{name}; import it from there (or from "
            "rsvit.models)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(spec, name)
    raise AttributeError(f"module 'rsvit.models.factory' has no attribute {name!r}")
