"""Segment Anything's training loss: focal + dice on the mask, MSE between predicted and actual IoU.

Per mask, ``focal_weight * focal + dice_weight * dice + iou_weight * (iou_pred - iou)^2`` with the 20 : 1
focal-to-dice ratio of the paper; the IoU target is the IoU of the thresholded prediction with the
target, without gradient. Pixels outside ``valid`` (ignored labels, padding) count in neither term.
With several candidate masks per prompt (a single point is ambiguous) only the candidate of lowest
mask loss is trained, and the IoU head is trained on it.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from rsvit.metrics.promptable import mask_iou

__all__ = ["dice_loss", "focal_loss", "sam_loss"]


def focal_loss(
    logits: Tensor, target: Tensor, valid: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Sigmoid focal loss averaged over the valid pixels of each mask: ``(..., H, W)`` -> ``(...)``."""
    target = target.float()
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    weight = alpha * target + (1 - alpha) * (1 - target)
    per_pixel = weight * ce * (1 - p_t) ** gamma * valid
    return per_pixel.flatten(-2).sum(-1) / valid.flatten(-2).sum(-1).clamp(min=1)


def dice_loss(logits: Tensor, target: Tensor, valid: Tensor, smooth: float = 1.0) -> Tensor:
    """``1 - (2 |P ∩ T| + s) / (|P| + |T| + s)`` (soft ``P``, valid pixels): ``(..., H, W)`` -> ``(...)``."""
    prob = logits.sigmoid() * valid
    target = target.float() * valid
    inter = (prob * target).flatten(-2).sum(-1)
    total = prob.flatten(-2).sum(-1) + target.flatten(-2).sum(-1)
    return 1 - (2 * inter + smooth) / (total + smooth)


def sam_loss(
    logits: Tensor,
    iou_pred: Tensor,
    target: Tensor,
    valid: Tensor,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss per prompt and its parts.

    Args:
        logits: ``(N, K, H, W)`` mask logits (``K`` candidates per prompt).
        iou_pred: ``(N, K)`` predicted IoUs.
        target: ``(N, H, W)`` target masks.
        valid: ``(H, W)`` or ``(N, H, W)`` pixels that count.
        focal_weight: weight of the focal term.
        dice_weight: weight of the dice term.
        iou_weight: weight of the IoU-prediction term.

    Returns:
        ``(loss (N,), {"focal", "dice", "iou"} each (N,))`` for the chosen candidate of each prompt.
    """
    n, k = logits.shape[:2]
    target_k = target[:, None].expand(-1, k, -1, -1)
    valid_k = valid.float().expand_as(target).unsqueeze(1).expand(-1, k, -1, -1)
    logits = logits.float()
    focal = focal_loss(logits, target_k, valid_k)
    dice = dice_loss(logits, target_k, valid_k)
    mask_part = focal_weight * focal + dice_weight * dice
    best = mask_part.argmin(dim=1) if k > 1 else torch.zeros(n, dtype=torch.long, device=logits.device)
    rows = torch.arange(n, device=logits.device)
    chosen = logits[rows, best]
    with torch.no_grad():
        actual = mask_iou(chosen > 0, target, valid.expand_as(target).bool())
    iou = (iou_pred[rows, best].float() - actual) ** 2
    parts = {"focal": focal[rows, best], "dice": dice[rows, best], "iou": iou}
    return mask_part[rows, best] + iou_weight * iou, parts
