"""Oriented R-CNN: backbone -> FPN -> oriented RPN -> rotated RoI head, as a plain ``nn.Module``.

Boxes are ``(cx, cy, w, h, angle)`` in input pixels, le90 convention (see
:mod:`rsvit.structures.rotated_boxes`; the official OBBDetection angle is the negative of this one).
Inputs are normalised images; they are padded (bottom/right, zeros) to a multiple of 32 before the
backbone, as the official pipeline does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsvit.models.backbones import Backbone, create_backbone
from rsvit.models.detection.anchors import AnchorGenerator
from rsvit.models.detection.fpn import FPN
from rsvit.models.detection.freezing import OFFICIAL_TRAINING, FreezeConfig, frozen_backbone_modules
from rsvit.models.detection.inputs import DetectionTargets, check_labels
from rsvit.models.detection.losses import rcnn_losses, rpn_losses
from rsvit.models.detection.roi_head import OrientedBBoxHead, RCNNTestConfig, RotatedRoIExtractor
from rsvit.models.detection.rpn import OrientedRPNHead, RPNTestConfig
from rsvit.models.detection.targets import (
    RCNN_ASSIGN,
    RCNN_SAMPLE,
    RPN_ASSIGN,
    RPN_SAMPLE,
    anchors_inside,
    max_iou_assign,
    random_sample,
    rcnn_overlaps,
    rpn_overlaps,
)

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
        freeze: FreezeConfig | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone_norms = backbone_norms
        self.neck = neck
        self.rpn_head = rpn_head
        self.roi_extractor = roi_extractor
        self.bbox_head = bbox_head
        self.anchor_generator = anchor_generator or AnchorGenerator()
        self.freeze = freeze or FreezeConfig()
        network = getattr(backbone, "model", backbone)
        family = getattr(backbone, "weights_family", None)
        # A tuple, not a ModuleList: these modules are registered once, under the backbone.
        self._frozen = tuple(frozen_backbone_modules(network, family, self.freeze.frozen_stages))
        for module in self._frozen:
            module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> OrientedRCNN:
        """Training mode, except for frozen stages and (with ``norm_eval``) the backbone BatchNorms."""
        super().train(mode)
        if mode:
            for module in self._frozen:
                module.eval()
            if self.freeze.norm_eval:
                for module in self.backbone.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self

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
        return self.detections(props, logits, deltas, tuple(images.shape[-2:]))

    def detections(
        self, proposals: Sequence[Tensor], logits: Tensor, deltas: Tensor, image_size: tuple[int, int]
    ) -> list[dict[str, Tensor]]:
        """Per-image detections from the RoI head outputs of all images (concatenated in image order)."""
        out = []
        start = 0
        for p in proposals:
            stop = start + p.shape[0]
            boxes, scores, labels = self.bbox_head.postprocess(
                p, logits[start:stop], deltas[start:stop], image_size
            )
            out.append({"boxes": boxes, "scores": scores, "labels": labels})
            start = stop
        return out

    def loss(
        self,
        images: Tensor,
        gt_boxes: Sequence[Tensor] | Sequence[DetectionTargets],
        gt_labels: Sequence[Tensor] | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Training losses (official assignment, sampling and weights) for a batch.

        Args:
            images: ``(B, C, H, W)`` normalised images.
            gt_boxes: per image ``(G_i, 5)`` le90 boxes in input pixels (``G_i`` may be 0: such an image
                only contributes background terms), or one :class:`DetectionTargets` per image.
            gt_labels: per image ``(G_i,)`` int64 labels in ``[0, num_classes)``; omitted with
                :class:`DetectionTargets`.
            image_sizes: unpadded ``(H, W)`` per image (anchors must lie inside); default: the input size.
            generator: random source of the anchor and RoI sampling.
        """
        if gt_labels is None:
            if not all(isinstance(t, DetectionTargets) for t in gt_boxes):
                raise TypeError("pass gt_labels, or one DetectionTargets per image as gt_boxes")
            gt_labels = [t.labels.long() for t in gt_boxes]  # type: ignore[union-attr]
            gt_boxes = [t.boxes for t in gt_boxes]  # type: ignore[union-attr]
        b = images.shape[0]
        if len(gt_boxes) != b or len(gt_labels) != b:
            raise ValueError(
                f"need ground truth for each of the {b} images, got {len(gt_boxes)} / {len(gt_labels)}"
            )
        for boxes, labels in zip(gt_boxes, gt_labels, strict=True):
            if boxes.ndim != 2 or boxes.shape[-1] != 5 or labels.shape != boxes.shape[:1]:
                raise ValueError(
                    "gt boxes must be (G, 5) with (G,) labels, "
                    f"got {tuple(boxes.shape)} / {tuple(labels.shape)}"
                )
            if boxes.numel() and not (bool(torch.isfinite(boxes).all()) and bool((boxes[:, 2:4] > 0).all())):
                raise ValueError(
                    "gt boxes must be finite with positive w and h; drop degenerate boxes in the data "
                    "pipeline (the official DOTA pipeline ignores objects under 2 px)"
                )
            check_labels(labels, self.num_classes)
        sizes = list(image_sizes) if image_sizes is not None else [tuple(images.shape[-2:])] * b
        feats = self.extract_feat(images)
        logits, deltas = self.rpn_head(feats)
        level_anchors = self.anchors_for(feats)
        rpn = self._rpn_targets(logits, deltas, torch.cat(level_anchors), gt_boxes, sizes, generator)
        with torch.no_grad():
            detached = ([x.detach() for x in logits], [x.detach() for x in deltas])
            props = [self.rpn_head.proposals_single(*detached, level_anchors, i)[0] for i in range(b)]
        rois, labels, pos_rows, targets = self._rcnn_targets(props, gt_boxes, gt_labels, generator)
        cls, reg = self.roi_forward(feats, rois)
        loss_cls, loss_bbox = rcnn_losses(cls, labels, reg[pos_rows], targets, labels.numel())
        return {
            "loss_rpn_cls": rpn[0],
            "loss_rpn_bbox": rpn[1],
            "loss_cls": loss_cls,
            "loss_bbox": loss_bbox,
            "acc": (cls.argmax(-1) == labels).float().mean().detach()
            if labels.numel()
            else cls.new_zeros(()),
        }

    def _rpn_targets(
        self,
        logits: Sequence[Tensor],
        deltas: Sequence[Tensor],
        anchors: Tensor,
        gt_boxes: Sequence[Tensor],
        sizes: Sequence[tuple[int, int]],
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        sel_logits, sel_labels, pos_deltas, pos_targets = [], [], [], []
        for i, gt in enumerate(gt_boxes):
            flat_logits = torch.cat([x[i].permute(1, 2, 0).reshape(-1) for x in logits])
            flat_deltas = torch.cat([x[i].permute(1, 2, 0).reshape(-1, 6) for x in deltas])
            inside = anchors_inside(anchors, sizes[i]).nonzero(as_tuple=True)[0]
            assigned = max_iou_assign(rpn_overlaps(gt.to(anchors.dtype), anchors[inside]), RPN_ASSIGN)
            pos, neg = random_sample(assigned, RPN_SAMPLE, generator)
            sampled = inside[torch.cat([pos, neg])]
            sel_logits.append(flat_logits[sampled])
            sel_labels.append(torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]))
            pos_deltas.append(flat_deltas[inside[pos]])
            pos_targets.append(
                self.rpn_head.coder.encode(anchors[inside[pos]], gt[assigned[pos] - 1].to(anchors.dtype))
            )
        labels = torch.cat(sel_labels)
        return rpn_losses(
            torch.cat(sel_logits), labels, torch.cat(pos_deltas), torch.cat(pos_targets), labels.numel()
        )

    def _rcnn_targets(
        self,
        proposals: Sequence[Tensor],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        generator: torch.Generator | None,
    ) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
        rois, labels, pos_rows, targets = [], [], [], []
        offset = 0
        for props, gt, gt_lab in zip(proposals, gt_boxes, gt_labels, strict=True):
            gt = gt.to(props.dtype)
            cand = torch.cat([gt, props])
            assigned = max_iou_assign(rcnn_overlaps(gt, cand), RCNN_ASSIGN)
            pos, neg = random_sample(assigned, RCNN_SAMPLE, generator)
            rois.append(cand[torch.cat([pos, neg])])
            labels.append(torch.cat([gt_lab[assigned[pos] - 1], torch.full_like(neg, self.num_classes)]))
            pos_rows.append(torch.arange(offset, offset + pos.numel(), device=cand.device))
            targets.append(self.bbox_head.coder.encode(cand[pos], gt[assigned[pos] - 1]))
            offset += pos.numel() + neg.numel()
        return rois, torch.cat(labels), torch.cat(pos_rows), torch.cat(targets)


def build_oriented_rcnn(
    backbone: str | nn.Module = "vitaev2_s",
    num_classes: int = 15,
    fpn_channels: int = 256,
    fc_channels: int = 1024,
    backbone_kwargs: Mapping[str, Any] | None = None,
    rpn_test_cfg: RPNTestConfig | None = None,
    rcnn_test_cfg: RCNNTestConfig | None = None,
    out_norms: bool | None = None,
    pipeline: Literal["obbdetection", "mmrotate"] = "obbdetection",
    frozen_stages: int | None = None,
    norm_eval: bool | None = None,
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
        rpn_test_cfg: proposal settings (official defaults).
        rcnn_test_cfg: detection settings (official defaults).
        out_norms: a LayerNorm on every backbone map before the FPN, as the official detection Swin
            applies (``backbone.norm0..3``); default: only for Swin backbones. The official ViTAEv2
            detection backbone has such norms in its checkpoints but never applies them.
        pipeline: ``"obbdetection"`` (OBBDetection / RSP checkpoints: RoIs enlarged by 1.2 x 1.4 before
            pooling, boxes not clipped) or ``"mmrotate"`` (mmrotate checkpoints: RoIs pooled as they are,
            box centres clamped into the image). Running a checkpoint under the other pipeline works but
            degrades its detections.
        frozen_stages: backbone stages kept fixed in training (``-1``: none); default: the official
            value for the backbone family (ResNet 1, ViTAEv2 1, Swin 2; see
            :mod:`rsvit.models.detection.freezing`), none for other backbones.
        norm_eval: keep the backbone's BatchNorms in eval mode in training; default: the official value
            (ResNet and ViTAEv2 True, Swin False), False for other backbones.
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
    if pipeline not in ("obbdetection", "mmrotate"):
        raise ValueError(f"pipeline must be 'obbdetection' or 'mmrotate', got {pipeline!r}")
    mmrotate = pipeline == "mmrotate"
    if mmrotate:
        rcnn_test_cfg = replace(rcnn_test_cfg or RCNNTestConfig(), clip_centers=True)
    official = OFFICIAL_TRAINING.get(getattr(backbone, "weights_family", None) or "", FreezeConfig())
    freeze = FreezeConfig(
        official.frozen_stages if frozen_stages is None else frozen_stages,
        official.norm_eval if norm_eval is None else norm_eval,
    )
    anchors = AnchorGenerator()
    return OrientedRCNN(
        backbone,
        FPN(channels, fpn_channels, num_outs=5),
        OrientedRPNHead(fpn_channels, fpn_channels, anchors.num_anchors, rpn_test_cfg),
        RotatedRoIExtractor(w_factor=1.0, h_factor=1.0) if mmrotate else RotatedRoIExtractor(),
        OrientedBBoxHead(num_classes, fpn_channels, 7, fc_channels, rcnn_test_cfg),
        anchors,
        norms,
        freeze,
    )
