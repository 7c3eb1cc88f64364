"""Rotated NMS against the textbook greedy algorithm on shapely polygons."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rsvit.ops import batched_nms_rotated, box_iou_rotated, nms_rotated, rotated_overlap_pairs
from rsvit.ops.reference import box_iou_rotated_shapely, nms_rotated_shapely
from rsvit.ops.rotated_nms import multiclass_nms_rotated

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


def detections(
    n_objects: int, per_object: int, seed: int, extent: float = 800.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clusters of jittered copies around random objects, like raw detector output."""
    g = torch.Generator().manual_seed(seed)
    obj = torch.cat(
        [
            torch.rand(n_objects, 2, generator=g) * extent,
            torch.rand(n_objects, 2, generator=g) * 60 + 5,
            (torch.rand(n_objects, 1, generator=g) - 0.5) * math.pi,
        ],
        dim=1,
    ).repeat_interleave(per_object, 0)
    jitter = torch.randn(obj.shape, generator=g) * torch.tensor([3.0, 3.0, 3.0, 3.0, 0.15])
    boxes = obj + jitter
    boxes[:, 2:4] = boxes[:, 2:4].abs() + 1
    return boxes, torch.rand(len(boxes), generator=g)


def greedy_from_matrix(iou: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS written out with a precomputed IoU matrix, a second independent reference."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        if all(iou[i, k] <= threshold for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.5, 0.9])
def test_nms_matches_shapely_reference(device: str, threshold: float) -> None:
    boxes, scores = detections(60, 8, seed=int(threshold * 10))
    keep = nms_rotated(boxes.to(device), scores.to(device), threshold).cpu().numpy()
    expected = nms_rotated_shapely(boxes, scores, threshold, use_tree=False)
    assert 0 < len(expected) < len(boxes)
    assert np.array_equal(keep, expected)


def test_reference_agrees_with_matrix_greedy() -> None:
    boxes, scores = detections(20, 5, seed=11)
    iou = box_iou_rotated_shapely(boxes, boxes)
    expected = greedy_from_matrix(iou, scores.numpy(), 0.3)
    assert nms_rotated_shapely(boxes, scores, 0.3).tolist() == expected
    assert nms_rotated(boxes, scores, 0.3).tolist() == expected


def test_batched_nms_keeps_classes_apart() -> None:
    boxes, scores = detections(80, 6, seed=3)
    g = torch.Generator().manual_seed(4)
    classes = torch.randint(0, 4, (len(boxes),), generator=g)
    keep = batched_nms_rotated(boxes, scores, classes, 0.2).numpy()
    expected = nms_rotated_shapely(boxes, scores, 0.2, idxs=classes)
    assert np.array_equal(keep, expected)
    # Per class, it is plain NMS on that class's boxes.
    for c in range(4):
        sel = (classes == c).nonzero().squeeze(1)
        per_class = sel[nms_rotated(boxes[sel], scores[sel], 0.2)]
        assert sorted(per_class.tolist()) == sorted(k for k in keep.tolist() if classes[k] == c)


def test_dense_scene_with_many_boxes() -> None:
    boxes, scores = detections(300, 10, seed=5, extent=1500.0)
    keep = nms_rotated(boxes, scores, 0.1).numpy()
    assert np.array_equal(keep, nms_rotated_shapely(boxes, scores, 0.1))


def test_suppression_chain_and_ties() -> None:
    # a overlaps b, b overlaps c, a does not overlap c: greedy keeps a and c.
    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 4.0, 0.0], [6.0, 0.0, 10.0, 4.0, 0.0], [12.0, 0.0, 10.0, 4.0, 0.0]]
    )
    assert nms_rotated(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.2).tolist() == [0, 2]
    # If b scores highest it removes both neighbours.
    assert nms_rotated(boxes, torch.tensor([0.7, 0.9, 0.8]), 0.2).tolist() == [1]
    # Equal scores: earlier index wins, like a stable sort.
    same = boxes[[0, 0, 0]]
    assert nms_rotated(same, torch.ones(3), 0.5).tolist() == [0]
    # A long alternating chain of 200 boxes needs many rounds but must still be exact.
    chain = torch.stack(
        [
            torch.arange(200) * 6.0,
            torch.zeros(200),
            torch.full((200,), 10.0),
            torch.full((200,), 4.0),
            torch.zeros(200),
        ],
        dim=1,
    )
    scores = torch.linspace(1, 0, 200)
    assert nms_rotated(chain, scores, 0.2).tolist() == list(range(0, 200, 2))


def test_nms_edge_cases() -> None:
    empty = torch.zeros(0, 5)
    assert nms_rotated(empty, torch.zeros(0), 0.5).numel() == 0
    one = torch.tensor([[1.0, 1.0, 2.0, 2.0, 0.3]])
    assert nms_rotated(one, torch.tensor([0.3]), 0.5).tolist() == [0]
    with pytest.raises(ValueError, match="iou_threshold"):
        nms_rotated(one.repeat(2, 1), torch.ones(2), -0.1)
    with pytest.raises(ValueError, match="1 of 2 boxes have non-finite"):
        nms_rotated(torch.tensor([[1.0, 1.0, 2.0, 2.0, 0.3], [float("nan"), 0, 1, 1, 0]]), torch.ones(2), 0.5)
    with pytest.raises(ValueError, match="scores and idxs"):
        batched_nms_rotated(one, torch.ones(2), torch.zeros(1, dtype=torch.long), 0.5)


def test_overlap_pairs_are_complete() -> None:
    boxes, _ = detections(40, 4, seed=8)
    i, j, v = rotated_overlap_pairs(boxes, 0.05)
    iou = box_iou_rotated(boxes, boxes)
    expected = {(a, b) for a, b in zip(*torch.nonzero(torch.triu(iou, 1) > 0.05, as_tuple=True), strict=True)}
    got = set(zip(i.tolist(), j.tolist(), strict=True))
    assert got == {(int(a), int(b)) for a, b in expected}
    assert torch.allclose(v, iou[i, j])


def test_export_matches_eager() -> None:
    class Suppress(torch.nn.Module):
        def forward(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return batched_nms_rotated(boxes, scores, labels, 0.3)

    g = torch.Generator().manual_seed(0)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes = torch.cat(
            [
                torch.rand(n, 2, generator=g) * 60,
                torch.rand(n, 2, generator=g) * 20 + 2,
                torch.rand(n, 1, generator=g) * 3 - 1.5,
            ],
            dim=1,
        )
        return boxes, torch.rand(n, generator=g), torch.randint(0, 3, (n,), generator=g)

    inputs = make(50)
    n = torch.export.Dim("n", min=2, max=100000)
    program = torch.export.export(Suppress(), inputs, dynamic_shapes=({0: n}, {0: n}, {0: n}))
    for args in (inputs, make(80)):
        kept = program.module()(*args)
        assert 0 < kept.numel() < args[0].shape[0]
        assert torch.equal(kept, Suppress()(*args))


def test_multiclass_nms_on_shared_boxes_equals_batched_nms() -> None:
    g = torch.Generator().manual_seed(3)
    n, k = 300, 4
    boxes = torch.cat(
        [
            torch.rand(n, 2, generator=g) * 200,
            torch.rand(n, 2, generator=g) * 40 + 5,
            (torch.rand(n, 1, generator=g) - 0.5) * 3,
        ],
        dim=1,
    )
    probs = torch.rand(n, k, generator=g)
    probs[::7, 1] = probs[3, 1]  # ties between boxes inside one class
    cand = probs > 0.3
    roi_idx, labels = cand.nonzero(as_tuple=True)
    keep = batched_nms_rotated(boxes[roi_idx], probs[roi_idx, labels], labels, 0.1)
    box_idx, cls_idx = multiclass_nms_rotated(boxes, probs.masked_fill(~cand, float("-inf")), 0.1)
    assert 0 < keep.numel() < roi_idx.numel()
    assert torch.equal(box_idx, roi_idx[keep]) and torch.equal(cls_idx, labels[keep])
