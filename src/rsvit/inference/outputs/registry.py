"""Task name -> output kind: filled by each kind's ``@register_output``, read by the engine.

A plain table. The kinds of this package are imported by :func:`rsvit.inference.outputs.output_for_task`
on first use, so a new kind is a new file in the package and nothing else; a kind defined elsewhere
registers when its module is imported.
"""

from __future__ import annotations

from typing import TypeVar

from rsvit.inference.outputs.base import RasterOutput

__all__ = ["register_output", "registered_output", "registered_tasks"]

_BY_TASK: dict[str, type[RasterOutput]] = {}

OutputT = TypeVar("OutputT", bound=type[RasterOutput])


def register_output(cls: OutputT) -> OutputT:
    """Class decorator: ``cls`` writes the outputs of every task in ``cls.tasks``."""
    if not cls.tasks:
        raise ValueError(f"{cls.__name__}.tasks names no task; give task -> number of input rasters")
    for task in cls.tasks:
        other = _BY_TASK.get(task)
        if other is not None and other is not cls:
            raise ValueError(f"task {task!r} already has an output ({other.__name__}), not {cls.__name__}")
        _BY_TASK[task] = cls
    return cls


def registered_output(task: str) -> type[RasterOutput] | None:
    """The kind registered for ``task`` so far, or ``None``."""
    return _BY_TASK.get(task)


def registered_tasks() -> tuple[str, ...]:
    """Tasks registered so far, in registration order."""
    return tuple(_BY_TASK)
