"""Registry of whole task models: each model module registers its own builders.

A builder turns a :class:`~rsvit.models.spec.ModelSpec` into a randomly initialised network. Builders are
registered per ``(task, head)`` pair from the module that defines the model, so a new task family is a new
package under ``rsvit.models`` with its registration; no central table is edited::

    @register_task_model("segmentation", "upernet", default=True)
    def _upernet(spec: ModelSpec) -> nn.Module: ...

``import rsvit.models`` imports every module and package directly under it, which runs the registrations;
that is also why ``load_model`` can rebuild any model file without being told where its builder lives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from rsvit.errors import ModelSpecError

if TYPE_CHECKING:
    from rsvit.models.spec import ModelSpec

__all__ = ["ModelBuilder", "model_builder", "register_task_model", "task_heads", "task_names"]

ModelBuilder = Callable[["ModelSpec"], nn.Module]

# task -> head -> builder, in registration order, and the head used when a spec names none.
_BUILDERS: dict[str, dict[str, ModelBuilder]] = {}
_DEFAULT_HEADS: dict[str, str] = {}


def _same_function(a: ModelBuilder, b: ModelBuilder) -> bool:
    """True for the same builder registered again (a reloaded module defines a new function object)."""
    return all(getattr(a, k, None) == getattr(b, k, None) for k in ("__module__", "__qualname__"))


def register_task_model(
    task: str, head: str, *, default: bool = False
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder(spec) -> nn.Module`` for ``ModelSpec(task=task, head=head)``.

    Args:
        task: the task family (``ModelSpec.task``), e.g. ``"segmentation"``.
        head: the head name within the family (``ModelSpec.head``), e.g. ``"upernet"``.
        default: this head is used when a spec names none; one per task.

    Raises:
        ValueError: another builder already holds the pair, or the task already has another default head.
    """

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        heads = _BUILDERS.setdefault(task, {})
        known = heads.get(head)
        if known is not None and not _same_function(known, builder):
            raise ValueError(f"a model builder for task {task!r}, head {head!r} is already registered")
        if default and _DEFAULT_HEADS.get(task, head) != head:
            raise ValueError(f"task {task!r} already has the default head {_DEFAULT_HEADS[task]!r}")
        heads[head] = builder
        if default:
            _DEFAULT_HEADS[task] = head
        return builder

    return decorator


def task_names() -> tuple[str, ...]:
    """The registered task families, in registration order."""
    return tuple(_BUILDERS)


def task_heads(task: str) -> tuple[str, ...]:
    """Heads registered for ``task``, the default first; empty for an unknown task."""
    heads = tuple(_BUILDERS.get(task, {}))
    default = _DEFAULT_HEADS.get(task)
    return heads if default is None else (default, *(h for h in heads if h != default))


def model_builder(task: str, head: str) -> ModelBuilder:
    """The builder registered for ``(task, head)``.

    Raises:
        ModelSpecError: nothing is registered for the pair (a ``ValueError``); the message lists what is.
    """
    if task not in _BUILDERS:
        raise ModelSpecError(f"unknown task {task!r}; choose one of {', '.join(task_names())}")
    if head not in _BUILDERS[task]:
        raise ModelSpecError(
            f"head {head!r} does not fit task {task!r}; choose one of {', '.join(task_heads(task))}"
        )
    return _BUILDERS[task][head]
