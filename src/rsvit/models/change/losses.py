"""The cross entropy of the official BIT training, including its resizing of smaller logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BITCrossEntropyLoss", "bit_cross_entropy"]


def bit_cross_entropy(
    logits: Tensor, target: Tensor, ignore_index: int = 255, weight: Tensor | None = None
) -> Tensor:
    """Mean cross entropy over the labelled pixels, as the official BIT trainer computes it.

    Args:
        logits: (B, C, h, w) raw scores. When (h, w) differs from the label size they are first
            resized bilinearly with ``align_corners=True`` (the official behaviour).
        target: (B, H, W) or (B, 1, H, W) class indices; ``ignore_index`` pixels do not count.
        ignore_index: target value of unlabelled pixels.
        weight: optional ``(C,)`` class weights, as in :func:`torch.nn.functional.cross_entropy`.
    """
    if target.ndim == 4:
        if target.shape[1] != 1:
            raise ValueError(f"a 4-D target must have one channel, got shape {tuple(target.shape)}")
        target = target[:, 0]
    if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0]:
        raise ValueError(
            f"expected logits (B, C, h, w) and target (B, H, W), got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=True)
    return F.cross_entropy(logits, target.long(), weight=weight, ignore_index=ignore_index)


class BITCrossEntropyLoss(nn.Module):
    """Module form of :func:`bit_cross_entropy`."""

    def __init__(self, ignore_index: int = 255, weight: Tensor | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return bit_cross_entropy(logits, target, self.ignore_index, self.weight)
