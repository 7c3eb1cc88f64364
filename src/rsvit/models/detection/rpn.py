"""Oriented region proposal network (Oriented R-CNN, Xie et al. 2021) with the official proposal rules.

Per level a shared 3x3 conv + ReLU feeds two 1x1 convs: one sigmoid logit per anchor and six
midpoint-offset deltas per anchor (channel ``a * 6 + k``). Proposals of one image are made as the
official code makes them: per level, the ``nms_pre`` best-scoring anchors (by a descending sort, only
when the level has more); all levels decoded at once (not clipped to the image); NMS at IoU
``nms_thr`` on the *enclosing horizontal boxes*, separately per level; the first ``nms_post``
survivors in score order over all levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms

from rsvit.ops.box_coders import MidpointOffsetCoder
from rsvit.structures.rotated_boxes import obb_to_hbox

__all__ = ["OrientedRPNHead", "PreNMSCandidates", "RPNTestConfig"]

RPN_STDS = (1.0, 1.0, 1.0, 1.0, 0.5, 0.5)


@dataclass(frozen=True)
class RPNTestConfig:
    """Proposal settings (official DOTA/HRSC values: 2000 / 2000 / 0.8)."""

    nms_pre: int = 2000
    nms_post: int = 2000
    nms_thr: float = 0.8


@dataclass
class PreNMSCandidates:
    """The anchors of one image that enter the proposal decoder, levels concatenated (fine to coarse)."""

    anchors: Tensor  # (N, 4) horizontal anchors
    deltas: Tensor  # (N, 6) normalised midpoint-offset deltas
    scores: Tensor  # (N,) sigmoid scores
    levels: Tensor  # (N,) int64 level index


class OrientedRPNHead(nn.Module):
    """Shared head over all pyramid levels; see the module docstring for the proposal rules."""

    def __init__(
        self,
        in_channels: int = 256,
        feat_channels: int = 256,
        num_anchors: int = 3,
        test_cfg: RPNTestConfig | None = None,
    ) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * 6, 1)
        self.coder = MidpointOffsetCoder(stds=RPN_STDS)
        self.test_cfg = test_cfg or RPNTestConfig()
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):  # official initialisation
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Logits ``(B, A, H, W)`` and deltas ``(B, 6A, H, W)`` for every level."""
        logits, deltas = [], []
        for x in feats:
            x = F.relu(self.rpn_conv(x))
            logits.append(self.rpn_cls(x))
            deltas.append(self.rpn_reg(x))
        return logits, deltas

    def select_candidates(
        self, logits: Sequence[Tensor], deltas: Sequence[Tensor], anchors: Sequence[Tensor], image: int = 0
    ) -> PreNMSCandidates:
        """Per level the ``nms_pre`` best anchors of image ``image`` (all of them when fewer)."""
        out_a, out_d, out_s, out_l = [], [], [], []
        for level, (cls, reg, anc) in enumerate(zip(logits, deltas, anchors, strict=True)):
            # Scores and deltas in float32 even under bf16 autocast: ranking and decoding need the bits.
            scores = cls[image].permute(1, 2, 0).reshape(-1).float().sigmoid()
            reg = reg[image].permute(1, 2, 0).reshape(-1, 6).float()
            if scores.numel() > self.test_cfg.nms_pre:
                scores, order = scores.sort(descending=True, stable=True)
                scores, order = scores[: self.test_cfg.nms_pre], order[: self.test_cfg.nms_pre]
                reg, anc = reg[order], anc[order]
            out_a.append(anc)
            out_d.append(reg)
            out_s.append(scores)
            out_l.append(torch.full_like(scores, level, dtype=torch.long))
        return PreNMSCandidates(torch.cat(out_a), torch.cat(out_d), torch.cat(out_s), torch.cat(out_l))

    def proposal_nms(self, boxes: Tensor, scores: Tensor, levels: Tensor) -> Tensor:
        """Indices kept by the per-level NMS of the enclosing horizontal boxes, by decreasing score.

        Levels are kept apart by shifting each level's boxes by ``level * (span + 1)`` (the official
        construction, so float rounding is the same), then one plain NMS runs over all of them.
        """
        hbb = obb_to_hbox(boxes)
        if hbb.numel() == 0:
            return torch.zeros(0, dtype=torch.long, device=boxes.device)
        span = hbb.max() - hbb.min() + 1
        shifted = hbb + (levels.to(hbb.dtype) * span).unsqueeze(-1)
        return nms(shifted, scores, self.test_cfg.nms_thr)

    def proposals_single(
        self, logits: Sequence[Tensor], deltas: Sequence[Tensor], anchors: Sequence[Tensor], image: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Oriented proposals ``(K, 5)`` (le90) and their scores ``(K,)`` for one image."""
        cand = self.select_candidates(logits, deltas, anchors, image)
        boxes = self.coder.decode(cand.anchors, cand.deltas)
        keep = self.proposal_nms(boxes, cand.scores, cand.levels)[: self.test_cfg.nms_post]
        return boxes[keep], cand.scores[keep]
