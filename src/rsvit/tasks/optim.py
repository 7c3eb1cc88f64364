"""Optimisation pieces the tasks share: parameter groups, the default optimiser and the lr schedules.

Two different ways of grouping parameters are in use and they are kept apart by name:

* :func:`weight_decay_groups` splits by *whether weight decay applies* (mmcv's ``custom_keys`` with
  ``decay_mult=0``, and RSP's rule that biases, norms and position tables are not decayed);
* :func:`encoder_decoder_groups` splits by *network part*, so the backbone can train at a lower lr
  than the freshly initialised head (the DPT recipe).

The schedules are plain factor functions for ``LambdaLR`` (or timm's cosine for classification), so
each family's recipe reads as one line in its ``configure_optimizers``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "WarmupDecay",
    "default_optimizer",
    "encoder_decoder_groups",
    "linear_lr_factor",
    "poly_lr_factor",
    "weight_decay_groups",
]

ScheduleName = Literal["cosine", "poly", "constant"]


def default_optimizer(
    name: str, settings: Mapping[str, Any]
) -> Callable[[Iterable[Any]], torch.optim.Optimizer]:
    """The optimiser factory a task uses when the config names none: ``torch.optim.<name>(**settings)``."""
    return functools.partial(getattr(torch.optim, name), **dict(settings))


def weight_decay_groups(
    model: nn.Module, no_decay_keywords: Sequence[str] = (), skip_norms_and_biases: bool = False
) -> list[dict[str, Any]]:
    """Two groups: with the optimiser's weight decay, and without (``weight_decay=0``).

    A parameter goes without decay when its name contains one of ``no_decay_keywords``; with
    ``skip_norms_and_biases`` also when it is 1-D (norms), a ``.bias`` or named by the model's
    ``no_weight_decay()`` (RSP's rule for classification). Frozen parameters are left out; an empty
    no-decay group is not returned.
    """
    skip = (
        set(model.no_weight_decay()) if skip_norms_and_biases and hasattr(model, "no_weight_decay") else set()
    )
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        plain = skip_norms_and_biases and (param.ndim <= 1 or name.endswith(".bias") or name in skip)
        (no_decay if plain or any(k in name for k in no_decay_keywords) else decay).append(param)
    groups: list[dict[str, Any]] = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def encoder_decoder_groups(model: nn.Module) -> list[dict[str, Any]]:
    """``encoder`` (``model.backbone``) and ``decoder`` (the rest) parameter groups, empty ones left out.

    A model without a ``backbone`` attribute gives one ``decoder`` group.
    """
    backbone = getattr(model, "backbone", None)
    encoder = list(backbone.parameters()) if isinstance(backbone, nn.Module) else []
    ids = {id(p) for p in encoder}
    decoder = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": encoder, "name": "encoder"}, {"params": decoder, "name": "decoder"}]
    return [g for g in groups if g["params"]]


def poly_lr_factor(
    step: int,
    max_steps: int,
    power: float = 1.0,
    min_ratio: float = 0.0,
    warmup_steps: int = 0,
    warmup_ratio: float = 1e-6,
) -> float:
    """Factor on the base lr at optimiser step ``step`` (0-based): poly decay with linear warm-up (mmcv).

    ``min_ratio`` is ``min_lr / base_lr``. During warm-up the poly value is scaled by
    ``1 - (1 - step / warmup_steps) * (1 - warmup_ratio)``.
    """
    progress = min(step, max_steps) / max(max_steps, 1)
    factor = (1.0 - min_ratio) * (1.0 - progress) ** power + min_ratio
    if warmup_steps > 0 and step < warmup_steps:
        factor *= 1.0 - (1.0 - step / warmup_steps) * (1.0 - warmup_ratio)
    return factor


def linear_lr_factor(index: int, total: int) -> float:
    """BIT's linear rule: ``1 - index / (total + 1)`` (``index`` = epoch, or step without max_epochs)."""
    return max(0.0, 1.0 - index / float(total + 1))


class WarmupDecay:
    """Learning-rate factor of optimiser step ``s`` (for ``LambdaLR``): linear warmup, then decay.

    Warmup: ``(s + 1) / warmup_steps`` for ``s < warmup_steps``. Then with ``p = (s - warmup_steps) /
    (total_steps - warmup_steps)`` in [0, 1]: ``"cosine"``: ``r + (1 - r) (1 + cos(pi p)) / 2``; ``"poly"``:
    ``r + (1 - r) (1 - p) ** power``; ``"constant"``: 1, where ``r`` is ``min_ratio``.
    """

    def __init__(
        self,
        total_steps: int,
        warmup_steps: int = 0,
        schedule: ScheduleName = "cosine",
        min_ratio: float = 0.0,
        power: float = 0.9,
    ) -> None:
        if schedule not in ("cosine", "poly", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'poly' or 'constant', got {schedule!r}")
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need 0 <= warmup_steps <= total_steps >= 1, got {warmup_steps}, {total_steps}")
        if not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.schedule, self.min_ratio, self.power = schedule, float(min_ratio), float(power)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        p = min((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 1.0)
        decay = 0.5 * (1.0 + math.cos(math.pi * p)) if self.schedule == "cosine" else (1.0 - p) ** self.power
        return self.min_ratio + (1.0 - self.min_ratio) * decay
