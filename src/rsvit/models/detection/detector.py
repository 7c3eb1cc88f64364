"""Oriented R-CNN: backbone -> FPN -> oriented RPN -> rotated RoI head, as a plain ``nn.Module``.

Boxes are ``(cx, cy, w, h, angle)`` in input pixels, le90 convention (see :mod:`rsvit.ops.rotated_boxes`;
the official OBBDetection angle is the negative of this one). Inputs are normalised images; they are
padded (bottom/right, zeros) to a multiple of 32 before the backbone, as the official pipeline does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsvit.models.backbones import Backbone, create_backbone
from rsvit.models.detection.anchors import AnchorGenerator
from rsvit.models.detection.fpn import FPN
from rsvit.models.detection.roi_head import OrientedBBoxHead, RCNNTestConfig, RotatedRoIExtractor
from rsvit.models.detection.rpn import OrientedRPNHead, RPNTestConfig

__all__ = ["OrientedRCNN", "build_oriented_rcnn"]

PAD_MULTIPLE = 32


class OrientedRCNN(nn.Module):
    """Two-stage oriented detector; ``forward`` returns one detection dict per image (eval mode).

    Each dict holds ``boxes`` ``(D, 5)`` le90, ``scores`` ``(D,)`` and ``labels`` ``(D,)`` (0-based,
    background excluded), sorted by decreasing score.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: FPN,
        rpn_head: OrientedRPNHead,
        roi_extractor: RotatedRoIExtractor,
        bbox_head: OrientedBBoxHead,
        anchor_generator: AnchorGenerator | None = None,
        backbone_norms: nn.ModuleList | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone_norms = backbone_norms
        self.neck = neck
        self.rpn_head = rpn_head
        self.roi_extractor = roi_extractor
        self.bbox_head = bbox_head
        self.anchor_generator = anchor_generator or AnchorGenerator()

    @property
    def num_classes(self) -> int:
        return self.bbox_head.num_classes

    def extract_feat(self, images: Tensor) -> list[Tensor]:
        """Pyramid maps P2..P6 of padded images."""
        if images.ndim != 4:
            raise ValueError(f"expected images (B, C, H, W), got {tuple(images.shape)}")
        pad_h, pad_w = (-images.shape[2]) % PAD_MULTIPLE, (-images.shape[3]) % PAD_MULTIPLE
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        feats = self.backbone(images)
        if self.backbone_norms is not None:
            feats = [
                norm(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                for norm, f in zip(self.backbone_norms, feats, strict=True)
            ]
        return self.neck(feats)

    def anchors_for(self, feats: Sequence[Tensor]) -> list[Tensor]:
        return self.anchor_generator([tuple(f.shape[-2:]) for f in feats], feats[0].device)

    def proposals(self, feats: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Per image: oriented proposals ``(K, 5)`` le90 and their objectness ``(K,)``."""
        logits, deltas = self.rpn_head(feats)
        anchors = self.anchors_for(feats)
        return [self.rpn_head.proposals_single(logits, deltas, anchors, i) for i in range(feats[0].shape[0])]

    def roi_forward(self, feats: Sequence[Tensor], proposals: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Class logits and deltas for the proposals of every image (concatenated in image order)."""
        rois = torch.cat(
            [torch.cat([torch.full_like(p[:, :1], i), p], dim=1) for i, p in enumerate(proposals)]
        )
        return self.bbox_head(self.roi_extractor(feats, rois))

    def forward(self, images: Tensor) -> list[dict[str, Tensor]]:
        feats = self.extract_feat(images)
        props = [p for p, _ in self.proposals(feats)]
        logits, deltas = self.roi_forward(feats, props)
        out = []
        start = 0
        for p in props:
            stop = start + p.shape[0]
            boxes, scores, labels = self.bbox_head.postprocess(p, logits[start:stop], deltas[start:stop])
            out.append({"boxes": boxes, "scores": scores, "labels": labels})
            start = stop
        return out


def build_oriented_rcnn(
    backbone: str | nn.Module = "vitaev2_s",
    num_classes: int = 15,
    fpn_channels: int = 256,
    fc_channels: int = 1024,
    backbone_kwargs: Mapping[str, Any] | None = None,
    rpn_test_cfg: RPNTestConfig | None = None,
    rcnn_test_cfg: RCNNTestConfig | None = None,
    out_norms: bool | None = None,
) -> OrientedRCNN:
    """Oriented R-CNN with the official DOTA settings around any rsvit backbone.

    Args:
        backbone: a backbone name for :func:`rsvit.models.create_backbone` (``"vitaev2_s"``,
            ``"resnet50"``, ``"swin_t"``, ...) or a module returning four maps (strides 4..32) with a
            ``channels`` attribute.
        num_classes: object classes (DOTA-v1.0: 15, HRSC2016: 1); background is added internally.
        fpn_channels: FPN / RPN / RoI feature channels (official 256).
        fc_channels: width of the two shared FC layers (official 1024).
        backbone_kwargs: extra constructor arguments when ``backbone`` is a name.
        rpn_test_cfg, rcnn_test_cfg: proposal and detection settings (official defaults).
        out_norms: a LayerNorm on every backbone map before the FPN, as the official detection Swin
            applies (``backbone.norm0..3``); default: only for Swin backbones. The official ViTAEv2
            detection backbone has such norms in its checkpoints but never applies them.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, **dict(backbone_kwargs or {}))
    channels = getattr(backbone, "channels", None)
    if channels is None or len(channels) != 4:
        raise ValueError("the backbone must expose `channels` for four maps (strides 4, 8, 16, 32)")
    if isinstance(backbone, Backbone) and list(backbone.reductions) != [4, 8, 16, 32]:
        raise ValueError(f"the backbone maps need strides 4, 8, 16, 32; got {backbone.reductions}")
    if out_norms is None:
        out_norms = getattr(backbone, "weights_family", None) == "swin"
    norms = nn.ModuleList(nn.LayerNorm(c) for c in channels) if out_norms else None
    anchors = AnchorGenerator()
    return OrientedRCNN(
        backbone,
        FPN(channels, fpn_channels, num_outs=5),
        OrientedRPNHead(fpn_channels, fpn_channels, anchors.num_anchors, rpn_test_cfg),
        RotatedRoIExtractor(),
        OrientedBBoxHead(num_classes, fpn_channels, 7, fc_channels, rcnn_test_cfg),
        anchors,
        norms,
    )
