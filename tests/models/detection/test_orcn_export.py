"""Oriented R-CNN through ``torch.export``: the RoI head and the whole detector match eager output."""

from __future__ import annotations

import pytest
import torch
from orcn_fixture import build_tiny_orcn
from safetensors.torch import load_file
from torch import Tensor, nn

from rsvit.models.detection import OrientedRCNN
from rsvit.models.detection.roi_head import enlarge_rois, map_roi_levels


@pytest.fixture(scope="module")
def tiny(reference_dir):
    fixtures = reference_dir / "fixtures"
    model, _ = build_tiny_orcn(fixtures)
    return model, load_file(fixtures / "orcn_tiny_io.safetensors")


class RoIHead(nn.Module):
    def __init__(self, model: OrientedRCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, p2: Tensor, p3: Tensor, p4: Tensor, p5: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.bbox_head(self.model.roi_extractor([p2, p3, p4, p5], rois))


class Detections(nn.Module):
    def __init__(self, model: OrientedRCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        (det,) = self.model(images)
        return det["boxes"], det["scores"], det["labels"]


def test_roi_head_exports_and_matches_eager(tiny) -> None:
    model, io = tiny
    pyramid = [io[f"a/fpn_p{i}"] for i in range(2, 6)]
    props = io["a/proposals_le90"]
    rois = torch.cat([torch.zeros_like(props[:, :1]), props], dim=1)
    head = RoIHead(model)
    k = torch.export.Dim("k", min=2, max=100000)
    with torch.no_grad():
        program = torch.export.export(head, (*pyramid, rois[:40]), dynamic_shapes=(None,) * 4 + ({0: k},))
        for r in (rois[:40], rois):
            got, ref = program.module()(*pyramid, r), head(*pyramid, r)
            for a, b in zip(got, ref, strict=True):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # Several RoI levels are used, so the traced level selection is exercised.
    assert map_roi_levels(enlarge_rois(rois)).unique().numel() >= 3


def test_detector_exports_and_matches_eager(tiny) -> None:
    model, io = tiny
    x = io["a/input"]
    wrapped = Detections(model)
    with torch.no_grad():
        program = torch.export.export(wrapped, (x,))
        boxes, scores, labels = program.module()(x)
        ref_boxes, ref_scores, ref_labels = wrapped(x)
    assert torch.equal(labels, ref_labels)
    torch.testing.assert_close(scores, ref_scores, atol=2e-5, rtol=0)
    torch.testing.assert_close(boxes, ref_boxes, atol=2e-3, rtol=0)
    assert labels.numel() == io["a/det_labels"].numel()
