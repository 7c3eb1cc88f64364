"""Rotated NMS on real DOTA boxes equals the shapely reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rsvit.data.detection.labels import DOTA_V1_0_CLASSES, read_labels
from rsvit.ops import batched_nms_rotated
from rsvit.ops.reference import nms_rotated_shapely


def test_nms_on_dota_boxes_matches_reference(data_dir: Path) -> None:
    root = data_dir / "dota-samples"
    paths = sorted((root / "labelTxt").glob("*.txt")) + sorted(
        (root / "labelTxt_without_image").glob("*.txt")
    )
    g = torch.Generator().manual_seed(0)
    for path in paths:
        labels = read_labels(path, classes=DOTA_V1_0_CLASSES)
        gt = labels.obbs().float()
        classes = torch.from_numpy(labels.labels(DOTA_V1_0_CLASSES))
        # Five noisy detections per real object, as a detector head would produce before NMS.
        copies = gt.repeat_interleave(5, 0)
        size = copies[:, 2:4].mean(1, keepdim=True)
        noise = torch.randn(copies.shape, generator=g) * torch.cat(
            [size * 0.08] * 4 + [torch.full_like(size, 0.1)], 1
        )
        boxes = copies + noise
        boxes[:, 2:4] = boxes[:, 2:4].abs() + 0.5
        scores = torch.rand(len(boxes), generator=g)
        cls = classes.repeat_interleave(5)
        for threshold in (0.1, 0.5):
            keep = batched_nms_rotated(boxes, scores, cls, threshold).numpy()
            expected = nms_rotated_shapely(boxes, scores, threshold, idxs=cls)
            assert np.array_equal(keep, expected), (path.name, threshold)
        assert len(expected) >= len(gt) * 0.5
