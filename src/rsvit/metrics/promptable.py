"""Prompted mIoU: how well a promptable model segments the object a prompt points at.

For each prompt, the IoU of the predicted mask (logits > 0) with the target mask over the labelled
pixels (``valid``: ignored and padding pixels count neither way); prompted mIoU is the mean of these
IoUs over all prompts of one kind (box, noisy box, one point, several points). A prompt whose target
and prediction are both empty on the valid pixels scores 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["PromptedIoU", "mask_iou"]


def mask_iou(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """IoU per mask of boolean ``(N, H, W)`` predictions and targets, over ``valid`` pixels only."""
    pred, target = pred.bool(), target.bool()
    if valid is not None:
        valid = valid.bool().expand_as(pred)
        pred, target = pred & valid, target & valid
    inter = (pred & target).flatten(1).sum(1).float()
    union = (pred | target).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


class PromptedIoU(Metric):
    """Mean IoU per prompt kind, synchronised across processes.

    Args:
        kinds: names of the prompt kinds, e.g. ``("box", "point")``.
    """

    full_state_update = False

    def __init__(self, kinds: Sequence[str]) -> None:
        super().__init__()
        self.kinds = list(kinds)
        if not self.kinds:
            raise ValueError("PromptedIoU needs at least one prompt kind")
        self.add_state("iou_sum", torch.zeros(len(self.kinds), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(len(self.kinds), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, kind: str, ious: Tensor) -> None:  # type: ignore[override]
        """Adds the IoUs of some prompts of ``kind``."""
        i = self.kinds.index(kind)
        self.iou_sum[i] += ious.detach().double().sum()
        self.count[i] += ious.numel()

    def compute(self) -> dict[str, float]:
        """``{kind: mean IoU}`` (NaN for a kind without prompts) and ``{f"n_{kind}": prompts}``."""
        means = self.iou_sum / self.count.clamp(min=1)
        out: dict[str, float] = {}
        for i, kind in enumerate(self.kinds):
            out[kind] = float(means[i]) if self.count[i] > 0 else float("nan")
            out[f"n_{kind}"] = float(self.count[i])
        return out
