"""Oriented R-CNN at its edges: empty images, bad boxes and labels, wrong bands, foreign checkpoints."""

from __future__ import annotations

import pytest
import torch
from orcn_fixture import build_tiny_orcn

from rsvit.data.detection.labels import DOTA_V1_0_CLASSES
from rsvit.models.detection import DetectionTargets, RCNNTestConfig, build_oriented_rcnn
from rsvit.models.detection.convert import convert_official_orcn_state_dict


@pytest.fixture(scope="module")
def tiny(reference_dir) -> torch.nn.Module:
    model, _ = build_tiny_orcn(reference_dir / "fixtures")
    return model


def small_detector(backbone: torch.nn.Module, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_oriented_rcnn(backbone, num_classes=15, fpn_channels=32, fc_channels=64, **kwargs)


def test_no_detections_keep_their_shapes(tiny) -> None:
    model = small_detector(tiny.backbone, rcnn_test_cfg=RCNNTestConfig(score_thr=0.99)).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 96))
    assert len(out) == 2
    for det in out:
        assert det["boxes"].shape == (0, 5) and det["boxes"].dtype == torch.float32
        assert det["scores"].shape == (0,)
        assert det["labels"].shape == (0,) and det["labels"].dtype == torch.int64


def test_batch_without_objects_trains_on_background_only(tiny) -> None:
    model = small_detector(tiny.backbone).train()
    empty = [DetectionTargets(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))] * 2
    losses = model.loss(torch.randn(2, 3, 64, 96), empty, generator=torch.Generator().manual_seed(0))
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    assert float(losses["loss_rpn_bbox"].detach()) == 0.0 and float(losses["loss_bbox"].detach()) == 0.0
    assert float(losses["loss_rpn_cls"].detach()) > 0 and float(losses["loss_cls"].detach()) > 0
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    assert float(model.rpn_head.rpn_cls.weight.grad.abs().sum()) > 0
    assert float(model.bbox_head.fc_cls.weight.grad.abs().sum()) > 0


def test_targets_check_shapes_and_values() -> None:
    with pytest.raises(ValueError, match=r"\(G, 5\)"):
        DetectionTargets(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="one label per box"):
        DetectionTargets(torch.zeros(3, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class indices"):
        DetectionTargets(torch.zeros(1, 5), torch.zeros(1))
    with pytest.raises(ValueError, match="NaN"):
        DetectionTargets(torch.tensor([[1.0, 2.0, float("nan"), 4.0, 0.0]]), torch.zeros(1, dtype=torch.long))


def test_labels_outside_the_classes_are_named_with_the_classes() -> None:
    targets = DetectionTargets(torch.ones(3, 5), torch.tensor([2, 15, -1]))
    with pytest.raises(ValueError, match=r"label\(s\) \[-1, 15\].*14=helicopter"):
        targets.check(15, DOTA_V1_0_CLASSES)
    assert DetectionTargets(torch.ones(2, 5), torch.tensor([0, 14])).check(
        15, DOTA_V1_0_CLASSES
    ).labels.tolist() == [
        0,
        14,
    ]
    named = DetectionTargets.from_names(torch.ones(2, 5), ["ship", "plane"], DOTA_V1_0_CLASSES)
    assert named.labels.tolist() == [DOTA_V1_0_CLASSES.index("ship"), DOTA_V1_0_CLASSES.index("plane")]
    with pytest.raises(ValueError, match=r"unknown class name\(s\) \['boat'\].*large-vehicle"):
        DetectionTargets.from_names(torch.ones(2, 5), ["ship", "boat"], DOTA_V1_0_CLASSES)


def test_loss_rejects_labels_outside_the_classes(tiny) -> None:
    model = small_detector(tiny.backbone).train()
    targets = [DetectionTargets(torch.tensor([[30.0, 30.0, 20.0, 10.0, 0.3]]), torch.tensor([15]))]
    with pytest.raises(ValueError, match=r"label\(s\) \[15\].*15 classes"):
        model.loss(torch.randn(1, 3, 64, 64), targets)


def test_degenerate_and_outside_boxes_are_dropped_with_a_warning() -> None:
    boxes = torch.tensor(
        [
            [30.0, 30.0, 20.0, 10.0, 0.3],  # fine
            [30.0, 30.0, 0.0, 10.0, 0.3],  # zero width
            [-5.0, 40.0, 20.0, 6.0, 0.0],  # centre outside, partly inside: kept
            [200.0, 40.0, 20.0, 6.0, 0.0],  # wholly outside
            [40.0, -30.0, 10.0, 10.0, 0.0],  # wholly outside (above)
        ]
    )
    targets = DetectionTargets(boxes, torch.arange(5))
    with pytest.warns(UserWarning, match=r"1 degenerate .* 2 outside the 64x96 image"):
        clean = targets.clean((64, 96))
    assert clean.labels.tolist() == [0, 2]
    assert torch.equal(clean.boxes, boxes[[0, 2]])
    # Nothing to drop: the same object back, no warning.
    assert clean.clean((64, 96)) is clean


def test_wrong_band_count_says_what_was_expected(tiny) -> None:
    model = small_detector(tiny.backbone).eval()
    with pytest.raises(ValueError, match=r"expects \(B, 3, H, W\).*in_chans=4"):
        model(torch.zeros(1, 4, 64, 64))


def _heads(num_classes: int = 15, rpn_reg: int = 18, fc_reg: int = 5) -> dict[str, torch.Tensor]:
    return {
        "rpn_head.rpn_reg.weight": torch.zeros(rpn_reg, 8, 1, 1),
        "roi_head.bbox_head.fc_cls.weight": torch.zeros(num_classes + 1, 8),
        "roi_head.bbox_head.fc_reg.weight": torch.zeros(fc_reg, 8),
    }


def test_checkpoints_of_other_detectors_or_class_counts_are_named() -> None:
    with torch.device("meta"):
        hrsc = build_oriented_rcnn("resnet18", num_classes=1, fpn_channels=8, fc_channels=8)
    with pytest.raises(ValueError, match=r"classifies 15 classes.*built for 1.*num_classes=15"):
        convert_official_orcn_state_dict(_heads(15), hrsc)
    with pytest.raises(ValueError, match="horizontal RPN"):
        convert_official_orcn_state_dict(_heads(1, rpn_reg=12), hrsc)
    with pytest.raises(ValueError, match="class-agnostic rotated deltas"):
        convert_official_orcn_state_dict(_heads(1, fc_reg=4 * 2), hrsc)
    with pytest.raises(ValueError, match=r"no detector heads.*model\.backbone"):
        convert_official_orcn_state_dict({"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}, hrsc)
    with pytest.raises(KeyError, match="Mask R-CNN"):
        convert_official_orcn_state_dict(
            {**_heads(1), "roi_head.mask_head.conv.weight": torch.zeros(1)}, hrsc
        )
    with pytest.raises(KeyError, match="one-stage"):
        convert_official_orcn_state_dict({"bbox_head.retina_cls.weight": torch.zeros(1)}, hrsc)
    assert "bbox_head.fc_cls.weight" in convert_official_orcn_state_dict(_heads(1), hrsc)
