"""Training targets of Oriented R-CNN: max-IoU assignment and random sampling (official settings).

Assignment codes follow mmdet's ``MaxIoUAssigner``: ``-1`` ignored, ``0`` background, ``k + 1`` the
``k``-th ground truth. RPN: horizontal IoU between anchors (fully inside the image) and the ground
truths' enclosing horizontal boxes, positive >= 0.7, negative < 0.3, and every ground truth also takes
the anchors of its best IoU (if >= 0.3); 256 samples, half positive at most. R-CNN: rotated IoU between
proposals (ground truths prepended) and ground truths, positive >= 0.5, negative < 0.5; 512 samples,
a quarter positive at most.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

from rsvit.ops.rotated_iou import box_iou_rotated
from rsvit.structures.rotated_boxes import obb_to_hbox

__all__ = [
    "RCNN_ASSIGN",
    "RCNN_SAMPLE",
    "RPN_ASSIGN",
    "RPN_SAMPLE",
    "AssignConfig",
    "SampleConfig",
    "anchors_inside",
    "max_iou_assign",
    "random_sample",
    "rcnn_overlaps",
    "rpn_overlaps",
]


@dataclass(frozen=True)
class AssignConfig:
    """Max-IoU assignment thresholds; ``match_low_quality`` lets each ground truth take its best anchors."""

    pos_iou: float
    neg_iou: float
    min_pos_iou: float
    match_low_quality: bool


@dataclass(frozen=True)
class SampleConfig:
    """Random sampling: ``num`` samples per image, at most ``pos_fraction`` of them positive."""

    num: int
    pos_fraction: float


RPN_ASSIGN = AssignConfig(0.7, 0.3, 0.3, True)
RPN_SAMPLE = SampleConfig(256, 0.5)
RCNN_ASSIGN = AssignConfig(0.5, 0.5, 0.5, False)
RCNN_SAMPLE = SampleConfig(512, 0.25)


def anchors_inside(anchors: Tensor, image_size: tuple[int, int]) -> Tensor:
    """``(N,)`` mask of anchors lying fully inside the (unpadded) image ``(H, W)``."""
    h, w = image_size
    return (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] < w) & (anchors[:, 3] < h)


def rpn_overlaps(gt_boxes: Tensor, anchors: Tensor) -> Tensor:
    """``(G, N)`` IoU of the ground truths' enclosing horizontal boxes with horizontal anchors."""
    return box_iou(obb_to_hbox(gt_boxes), anchors)


def rcnn_overlaps(gt_boxes: Tensor, proposals: Tensor, min_side: float = 1e-3) -> Tensor:
    """``(G, N)`` rotated IoU; boxes with a side below ``min_side`` overlap nothing (official rule)."""
    iou = box_iou_rotated(gt_boxes, proposals)
    ok_gt = gt_boxes[:, 2:4].amin(-1) >= min_side
    ok_p = proposals[:, 2:4].amin(-1) >= min_side
    return iou * (ok_gt[:, None] & ok_p[None, :]).to(iou.dtype)


def max_iou_assign(overlaps: Tensor, cfg: AssignConfig) -> Tensor:
    """Assignment ``(N,)`` int64 of ``N`` boxes given their ``(G, N)`` overlaps with ``G`` ground truths."""
    g, n = overlaps.shape
    assigned = torch.full((n,), -1, dtype=torch.long, device=overlaps.device)
    if g == 0:
        assigned.zero_()
        return assigned
    if n == 0:
        return assigned
    best, best_gt = overlaps.max(dim=0)
    assigned[(best >= 0) & (best < cfg.neg_iou)] = 0
    pos = best >= cfg.pos_iou
    assigned[pos] = best_gt[pos] + 1
    if cfg.match_low_quality:
        gt_best = overlaps.max(dim=1).values
        # Ground truths in order, so a later one wins a box that ties for two (as in the official loop).
        for i in range(g):
            if gt_best[i] >= cfg.min_pos_iou:
                assigned[overlaps[i] == gt_best[i]] = i + 1
    return assigned


def random_sample(
    assigned: Tensor, cfg: SampleConfig, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Indices of sampled positives and negatives: up to ``num * pos_fraction`` positives, then negatives."""
    pos = (assigned > 0).nonzero(as_tuple=True)[0]
    neg = (assigned == 0).nonzero(as_tuple=True)[0]
    num_pos = min(int(cfg.num * cfg.pos_fraction), pos.numel())
    pos = pos[torch.randperm(pos.numel(), generator=generator, device="cpu")[:num_pos].to(pos.device)]
    num_neg = min(cfg.num - num_pos, neg.numel())
    neg = neg[torch.randperm(neg.numel(), generator=generator, device="cpu")[:num_neg].to(neg.device)]
    return pos, neg
