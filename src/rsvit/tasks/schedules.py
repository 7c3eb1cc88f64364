"""Per-step learning-rate schedule of the distillation tasks: linear warm-up, then cosine or constant.

Distillation recipes (TinyViT's, for example) commonly warm up linearly and then decay the lr along a
cosine over the run. The factor itself is :class:`rsvit.tasks.optim.WarmupDecay`, the one the promptable
and regression tasks use; this module only turns the tasks' ``scheduler`` / ``warmup_steps`` / ``min_lr``
arguments into Lightning's optimiser configuration. ``min_lr`` is an absolute lr, the same floor for every
parameter group (a group's factor ends at ``min_lr / its lr``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from rsvit.tasks.optim import WarmupDecay

__all__ = ["STEP_SCHEDULERS", "check_step_schedule", "step_schedule", "task_step_schedule"]

STEP_SCHEDULERS = ("cosine", "constant")


def check_step_schedule(scheduler: str, warmup_steps: int, min_lr: float) -> None:
    """Raises ``ValueError`` on arguments :func:`step_schedule` cannot use (called when a task is built)."""
    if scheduler not in STEP_SCHEDULERS:
        raise ValueError(
            f"scheduler must be 'cosine' (warm-up then cosine decay to min_lr) or 'constant' (warm-up "
            f"then the optimiser's lr), got {scheduler!r}"
        )
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be 0 or more, got {warmup_steps}")
    if min_lr < 0:
        raise ValueError(f"min_lr must be 0 or more, got {min_lr}")


def step_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: Callable[[], float],
    scheduler: str = "constant",
    warmup_steps: int = 0,
    min_lr: float = 0.0,
) -> Any:
    """What ``configure_optimizers`` returns: the optimiser alone, or with a per-step ``LambdaLR``.

    ``"constant"`` without warm-up leaves the optimiser's lr untouched (no scheduler at all). Otherwise
    the lr of optimiser step ``s`` is ``lr * (s + 1) / warmup_steps`` during warm-up, then with ``"cosine"``
    ``min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2`` for ``p`` going from 0 after warm-up to 1 at
    the run's last step. ``total_steps`` returns the run's optimiser steps (the trainer's
    ``estimated_stepping_batches``); it is only called when a schedule is made, so a task without a trainer
    still gets its optimiser.
    """
    check_step_schedule(scheduler, warmup_steps, min_lr)
    if scheduler == "constant" and warmup_steps == 0:
        return optimizer
    steps = float(total_steps())
    if not math.isfinite(steps) or steps < 1:
        raise ValueError(
            f"the {scheduler!r} lr schedule needs a finite run: set trainer.max_steps or trainer.max_epochs "
            "(or model.scheduler=constant with model.warmup_steps=0)"
        )
    total = int(steps)
    factors = []
    for group in optimizer.param_groups:
        base = float(group["lr"])
        if scheduler == "cosine" and min_lr > base:
            raise ValueError(f"min_lr={min_lr} is above the optimiser's lr {base}: lower model.min_lr")
        ratio = min_lr / base if scheduler == "cosine" and base > 0 else 0.0
        factors.append(WarmupDecay(total, min(int(warmup_steps), total), scheduler, ratio))
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": LambdaLR(optimizer, factors), "interval": "step"},
    }


def task_step_schedule(task: Any, optimizer: torch.optim.Optimizer) -> Any:
    """:func:`step_schedule` from a task's ``scheduler`` / ``warmup_steps`` / ``min_lr`` hyper-parameters.

    The run length is the task's trainer's ``estimated_stepping_batches``, read only when a schedule is made.
    """
    hp = task.hparams
    return step_schedule(
        optimizer, lambda: task.trainer.estimated_stepping_batches, hp.scheduler, hp.warmup_steps, hp.min_lr
    )
