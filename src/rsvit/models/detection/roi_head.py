"""Second stage of Oriented R-CNN: rotated RoI features, two shared FC layers, class scores and boxes.

RoIs are pooled the way the official (OBBDetection / RSP) code pools them, which its checkpoints rely
on: each proposal is first enlarged (``w * 1.2``, ``h * 1.4``, same centre and angle), the pyramid
level is chosen from the enlarged size (``floor(log2(sqrt(w * h) / 56))`` clamped to P2..P5), and
the enlarged box is sampled with rotated RoIAlign (7x7 bins, 2x2 samples, aligned). Regression is
class-agnostic (one delta set per RoI); class scores have the background last. At test time: softmax,
decode, keep (box, class) pairs scoring above ``score_thr``, rotated NMS per class, best ``max_per_img``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsvit.ops.box_coders import DeltaXYWHACoder
from rsvit.ops.rotated_nms import batched_nms_rotated, multiclass_nms_rotated
from rsvit.ops.rotated_roi_align import multilevel_rotated_roi_align

__all__ = [
    "OrientedBBoxHead",
    "RCNNTestConfig",
    "RotatedRoIExtractor",
    "enlarge_rois",
    "map_roi_levels",
    "select_detections",
]

RCNN_STDS = (0.1, 0.1, 0.2, 0.2, 0.1)
# Up to this many proposals per image the detection NMS shares one overlap matrix between classes.
_SHARED_NMS_MAX_BOXES = 8192


@dataclass(frozen=True)
class RCNNTestConfig:
    """Detection post-processing (official DOTA values).

    ``clip_centers``: clamp decoded box centres into the image, as mmrotate does (OBBDetection and RSP,
    whose checkpoints this module follows by default, leave boxes where they are).
    """

    score_thr: float = 0.05
    nms_thr: float = 0.1
    max_per_img: int = 2000
    min_side: float = 1e-3
    clip_centers: bool = False


def enlarge_rois(rois: Tensor, w_factor: float = 1.2, h_factor: float = 1.4) -> Tensor:
    """RoIs ``(K, 6)`` ``(batch, cx, cy, w, h, angle)`` with ``w`` and ``h`` scaled, the rest unchanged."""
    scale = rois.new_tensor([1.0, 1.0, 1.0, w_factor, h_factor, 1.0])
    return rois * scale


def map_roi_levels(rois: Tensor, num_levels: int = 4, finest_scale: float = 56.0) -> Tensor:
    """Pyramid level ``(K,)`` of each RoI from its size: 0 below ``2 * finest_scale``, and so on."""
    scale = torch.sqrt(rois[:, 3] * rois[:, 4])
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(0, num_levels - 1).long()


class RotatedRoIExtractor(nn.Module):
    """Pools ``(K, C, out, out)`` features of rotated RoIs from the pyramid level that fits their size."""

    def __init__(
        self,
        strides: Sequence[int] = (4, 8, 16, 32),
        output_size: int = 7,
        sampling_ratio: int = 2,
        w_factor: float = 1.2,
        h_factor: float = 1.4,
        finest_scale: float = 56.0,
    ) -> None:
        super().__init__()
        self.strides = [int(s) for s in strides]
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.w_factor, self.h_factor = w_factor, h_factor
        self.finest_scale = finest_scale

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
        """``feats``: at least ``len(strides)`` maps (extra ones are ignored); ``rois`` ``(K, 6)`` le90."""
        rois = enlarge_rois(rois, self.w_factor, self.h_factor)
        levels = map_roi_levels(rois, len(self.strides), self.finest_scale)
        return multilevel_rotated_roi_align(
            feats[: len(self.strides)],
            rois,
            levels,
            self.output_size,
            [1.0 / s for s in self.strides],
            self.sampling_ratio,
            aligned=True,
        )


class OrientedBBoxHead(nn.Module):
    """Two shared FC layers, then ``num_classes + 1`` logits (background last) and 5 rotated deltas."""

    def __init__(
        self,
        num_classes: int = 15,
        in_channels: int = 256,
        roi_size: int = 7,
        fc_channels: int = 1024,
        test_cfg: RCNNTestConfig | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.shared_fcs = nn.ModuleList(
            [nn.Linear(in_channels * roi_size * roi_size, fc_channels), nn.Linear(fc_channels, fc_channels)]
        )
        self.fc_cls = nn.Linear(fc_channels, num_classes + 1)
        self.fc_reg = nn.Linear(fc_channels, 5)
        self.coder = DeltaXYWHACoder(stds=RCNN_STDS)
        self.test_cfg = test_cfg or RCNNTestConfig()
        # Official initialisation for training from scratch.
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)

    def forward(self, roi_feats: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits ``(K, num_classes + 1)`` and normalised deltas ``(K, 5)`` (le90 angle)."""
        x = roi_feats.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)

    def decode(self, proposals: Tensor, deltas: Tensor) -> Tensor:
        """Refined boxes ``(K, 5)`` le90, not clipped to the image."""
        return self.coder.decode(proposals, deltas)

    def scored_boxes(
        self, proposals: Tensor, logits: Tensor, deltas: Tensor, image_size: tuple[int, int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Every proposal's refined box ``(K, 5)`` and class probabilities ``(K, num_classes)``.

        This is the part of :meth:`postprocess` before the per-class selection, which exported graphs
        keep (the selection's rotated NMS has no ONNX operator). ``image_size`` ``(H, W)`` is only used
        with ``clip_centers``.
        """
        probs = logits.float().softmax(-1)[:, : self.num_classes]
        boxes = self.decode(proposals, deltas.float())
        if self.test_cfg.clip_centers:
            if image_size is None:
                raise ValueError("clip_centers needs the image size")
            h, w = image_size
            cx, cy = boxes[:, 0].clamp(0, w - 1), boxes[:, 1].clamp(0, h - 1)
            boxes = torch.cat([cx[:, None], cy[:, None], boxes[:, 2:]], dim=1)
        return boxes, probs

    def postprocess(
        self, proposals: Tensor, logits: Tensor, deltas: Tensor, image_size: tuple[int, int] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Detections of one image: boxes ``(D, 5)`` le90, scores ``(D,)``, labels ``(D,)`` int64.

        ``image_size`` ``(H, W)`` is only used with ``clip_centers``; see :func:`select_detections`.
        """
        boxes, probs = self.scored_boxes(proposals, logits, deltas, image_size)
        return select_detections(boxes, probs, self.test_cfg)


def select_detections(boxes: Tensor, probs: Tensor, cfg: RCNNTestConfig) -> tuple[Tensor, Tensor, Tensor]:
    """The kept ``(box, class)`` pairs of one image: boxes ``(D, 5)``, scores ``(D,)``, labels ``(D,)``.

    Pairs scoring above ``score_thr`` with both sides at least ``min_side`` go through a rotated NMS per
    class, enumerated proposal-major (then class) as in the official code; a box is suppressed by a kept
    box of its class with IoU ``>= nms_thr``; the best ``max_per_img`` are kept.
    """
    # ">= thr" suppresses: compare against the next float below the threshold in the boxes' dtype.
    thr = float(
        torch.nextafter(torch.tensor(cfg.nms_thr, dtype=boxes.dtype), torch.tensor(0.0, dtype=boxes.dtype))
    )
    sized = boxes[:, 2:4].amin(-1) >= cfg.min_side
    if (
        not torch.compiler.is_compiling()
        and boxes.shape[0] <= _SHARED_NMS_MAX_BOXES
        and bool(torch.isfinite(boxes).all())
    ):
        # The same boxes for every class: overlaps computed once, all classes suppressed together.
        cand_scores = probs.masked_fill(~((probs > cfg.score_thr) & sized[:, None]), float("-inf"))
        roi_idx, labels = multiclass_nms_rotated(boxes, cand_scores, thr)
        roi_idx, labels = roi_idx[: cfg.max_per_img], labels[: cfg.max_per_img]
        return boxes[roi_idx], probs[roi_idx, labels], labels
    roi_idx, labels = (probs > cfg.score_thr).nonzero(as_tuple=True)
    scores = probs[roi_idx, labels]
    cand = boxes[roi_idx]
    keep_sized = sized[roi_idx]
    cand, scores, labels = cand[keep_sized], scores[keep_sized], labels[keep_sized]
    keep = batched_nms_rotated(cand, scores, labels, thr)[: cfg.max_per_img]
    return cand[keep], scores[keep], labels[keep]
