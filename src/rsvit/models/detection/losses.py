"""Oriented R-CNN losses with the official weights and normalisation.

RPN: sigmoid cross-entropy on the sampled anchors and smooth-L1 (beta 1/9) on the six normalised
midpoint-offset deltas of the positives, both divided by the number of sampled anchors in the batch.
R-CNN: softmax cross-entropy averaged over the sampled RoIs (background = last class) and smooth-L1
(beta 1) on the five normalised rotated deltas of the positives, divided by the number of sampled RoIs.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["rcnn_losses", "rpn_losses"]


def rpn_losses(
    logits: Tensor, labels: Tensor, deltas: Tensor, targets: Tensor, num_sampled: int
) -> tuple[Tensor, Tensor]:
    """``logits``, ``labels``: ``(S,)`` sampled anchors; ``deltas``, ``targets``: ``(P, 6)`` positives."""
    denom = max(num_sampled, 1)
    loss_cls = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="sum") / denom
    loss_bbox = F.smooth_l1_loss(deltas, targets, beta=1.0 / 9.0, reduction="sum") / denom
    return loss_cls, loss_bbox


def rcnn_losses(
    logits: Tensor, labels: Tensor, deltas: Tensor, targets: Tensor, num_sampled: int
) -> tuple[Tensor, Tensor]:
    """``logits`` ``(S, C + 1)``, ``labels`` ``(S,)``; ``deltas``/``targets`` ``(P, 5)`` of positives."""
    denom = max(num_sampled, 1)
    loss_cls = F.cross_entropy(logits, labels, reduction="sum") / denom
    loss_bbox = F.smooth_l1_loss(deltas, targets, beta=1.0, reduction="sum") / denom
    return loss_cls, loss_bbox
