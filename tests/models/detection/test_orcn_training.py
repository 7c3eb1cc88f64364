"""Oriented R-CNN training targets and losses: assignment rules, sampling, and a short real-data run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from orcn_fixture import build_tiny_orcn
from PIL import Image

from rsvit.data.detection.labels import DOTA_V1_0_CLASSES, read_labels
from rsvit.models.detection import build_oriented_rcnn
from rsvit.models.detection.targets import (
    RCNN_ASSIGN,
    RPN_ASSIGN,
    SampleConfig,
    anchors_inside,
    max_iou_assign,
    random_sample,
)
from rsvit.ops import poly_to_obb

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


def test_max_iou_assignment_rules() -> None:
    overlaps = torch.tensor(
        [
            [0.80, 0.20, 0.45, 0.00, 0.35],
            [0.10, 0.25, 0.10, 0.65, 0.35],
        ]
    )
    # RPN: >= 0.7 positive, < 0.3 negative, between ignored; each gt also takes its best boxes (>= 0.3).
    assert max_iou_assign(overlaps, RPN_ASSIGN).tolist() == [1, 0, -1, 2, -1]
    # R-CNN: >= 0.5 positive, < 0.5 negative, no low-quality matches.
    assert max_iou_assign(overlaps, RCNN_ASSIGN).tolist() == [1, 0, 0, 2, 0]
    # No ground truth: everything is background; no boxes: nothing to assign.
    assert max_iou_assign(torch.zeros(0, 3), RPN_ASSIGN).tolist() == [0, 0, 0]
    assert max_iou_assign(torch.zeros(2, 0), RPN_ASSIGN).numel() == 0


def test_sampling_caps_positives_and_fills_with_negatives() -> None:
    assigned = torch.tensor([1] * 30 + [0] * 100 + [-1] * 10)
    pos, neg = random_sample(assigned, SampleConfig(64, 0.25), torch.Generator().manual_seed(0))
    assert pos.numel() == 16 and neg.numel() == 48
    assert bool((assigned[pos] > 0).all()) and bool((assigned[neg] == 0).all())
    assert pos.unique().numel() == 16
    pos, neg = random_sample(assigned[:35], SampleConfig(64, 0.5))
    assert pos.numel() == 30 and neg.numel() == 5


def test_anchors_must_lie_inside_the_image() -> None:
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [-1.0, 0.0, 5.0, 5.0], [0.0, 0.0, 32.0, 8.0]])
    assert anchors_inside(anchors, (16, 32)).tolist() == [True, False, False]


def tiny_detector(reference_dir) -> torch.nn.Module:
    """Heads freshly initialised (official init) on the fixture's tiny ViTAEv2 backbone."""
    fixture_model, _ = build_tiny_orcn(reference_dir / "fixtures")
    return build_oriented_rcnn(fixture_model.backbone, num_classes=15, fpn_channels=32, fc_channels=64)


def test_losses_are_finite_with_and_without_objects(reference_dir) -> None:
    model = tiny_detector(reference_dir).train()
    x = torch.randn(2, 3, 96, 128)
    gt = [torch.tensor([[40.0, 50.0, 40.0, 16.0, 0.4], [90.0, 30.0, 24.0, 20.0, -1.2]]), torch.zeros(0, 5)]
    labels = [torch.tensor([3, 7]), torch.zeros(0, dtype=torch.long)]
    losses = model.loss(x, gt, labels, image_sizes=[(96, 128), (90, 100)])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc"}
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    for module in (
        model.rpn_head.rpn_reg,
        model.rpn_head.rpn_cls,
        model.bbox_head.fc_cls,
        model.bbox_head.fc_reg,
    ):
        assert module.weight.grad is not None and float(module.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="labels must be in"):
        model.loss(x, gt, [torch.tensor([3, 15]), labels[1]])
    flat = [torch.tensor([[40.0, 50.0, 40.0, 0.0, 0.4]]), gt[1]]
    with pytest.raises(ValueError, match="positive w and h"):
        model.loss(x, flat, [torch.tensor([3]), labels[1]])


def dota_patch(data_dir, size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A vehicle-rich window of DOTA P1888, normalised, with the objects whose centre lies inside."""
    root = data_dir / "dota-samples"
    image = np.asarray(Image.open(root / "images/P1888.png").convert("RGB"))
    labels = read_labels(root / "labelTxt/P1888.txt")
    x0, y0 = 280, 170
    polys = torch.tensor(labels.polygons, dtype=torch.float32) - torch.tensor(
        [x0, y0] * 4, dtype=torch.float32
    )
    boxes = poly_to_obb(polys)
    inside = (boxes[:, :2] >= 0).all(-1) & (boxes[:, :2] < size).all(-1)
    classes = torch.tensor([DOTA_V1_0_CLASSES.index(c) for c in labels.classes])
    crop = torch.from_numpy(image[y0 : y0 + size, x0 : x0 + size].copy()).permute(2, 0, 1)[None].float()
    return (crop - MEAN) / STD, boxes[inside], classes[inside]


def test_short_training_run_lowers_the_losses(reference_dir, data_dir) -> None:
    x, gt, labels = dota_patch(data_dir)
    assert gt.shape[0] > 10
    model = tiny_detector(reference_dir).train()
    model.backbone.eval()  # no drop-path noise: a deterministic objective
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(8):
        losses = model.loss(x, [gt], [labels], generator=torch.Generator().manual_seed(0))
        total = sum(v for k, v in losses.items() if k.startswith("loss"))
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()} | {"total": float(total.detach())})
    first, last = history[0], history[-1]
    for key in ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "total"):
        assert last[key] < 0.8 * first[key], (key, first[key], last[key])
    # The R-CNN box loss starts near 0 (only the ground truths themselves are positive RoIs) and grows
    # as the RPN starts finding objects: it must stay finite and have positives to work on.
    assert 0 < last["loss_bbox"] < 10
    assert last["acc"] > first["acc"]
