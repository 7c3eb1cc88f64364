"""Mask utilities of the automatic mask generator on small hand-made masks."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from rsvit.models.promptable.mask_ops import (
    batched_mask_to_box,
    connected_components,
    mask_to_rle,
    remove_small_regions,
    rle_area,
    rle_to_mask,
    stability_score,
)


def _flood_fill_sizes(mask: np.ndarray) -> list[int]:
    """Component sizes by breadth-first search over the 8 neighbours, sorted."""
    seen = np.zeros_like(mask)
    sizes = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        queue, size = deque([start]), 0
        while queue:
            r, c = queue.popleft()
            size += 1
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if (
                        0 <= rr < mask.shape[0]
                        and 0 <= cc < mask.shape[1]
                        and mask[rr, cc]
                        and not seen[rr, cc]
                    ):
                        seen[rr, cc] = True
                        queue.append((rr, cc))
        sizes.append(size)
    return sorted(sizes)


def test_connected_components_agree_with_flood_fill() -> None:
    rng = np.random.default_rng(0)
    for density in (0.2, 0.45, 0.6):
        mask = rng.random((23, 31)) < density
        labels, sizes = connected_components(mask)
        assert sorted(sizes.tolist()) == _flood_fill_sizes(mask)
        assert np.array_equal(labels > 0, mask)
        assert [int((labels == i + 1).sum()) for i in range(sizes.size)] == sizes.tolist()


def test_diagonal_pixels_are_connected_and_labels_follow_block_order() -> None:
    mask = np.zeros((4, 8), dtype=bool)
    mask[0, 5] = True  # block (0, 2)
    mask[1, 0] = mask[2, 1] = True  # diagonal pair, block (0, 0)
    labels, sizes = connected_components(mask)
    assert sizes.tolist() == [2, 1]
    assert labels[1, 0] == labels[2, 1] == 1 and labels[0, 5] == 2


def test_remove_small_regions_fills_holes_and_drops_islands() -> None:
    mask = np.zeros((12, 12), dtype=bool)
    mask[1:9, 1:9] = True
    mask[4, 4] = False  # one-pixel hole
    mask[11, 11] = True  # one-pixel island
    filled, changed = remove_small_regions(mask, 3, "holes")
    assert changed and filled[4, 4] and filled.sum() == mask.sum() + 1
    cleaned, changed = remove_small_regions(filled, 3, "islands")
    assert changed and not cleaned[11, 11] and cleaned.sum() == 64
    same, changed = remove_small_regions(cleaned, 3, "islands")
    assert not changed and np.array_equal(same, cleaned)


def test_all_small_islands_keep_the_largest() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 0] = True
    mask[4:6, 4:6] = True
    out, changed = remove_small_regions(mask, 10, "islands")
    assert changed and out.sum() == 4 and out[5, 5]


def test_boxes_have_inclusive_maxima() -> None:
    masks = torch.zeros(3, 5, 7, dtype=torch.bool)
    masks[0, 2, 5] = True
    masks[1, 1:4, 2:6] = True
    assert batched_mask_to_box(masks).tolist() == [[5, 2, 5, 2], [2, 1, 5, 3], [0, 0, 0, 0]]


def test_rle_round_trip_is_column_major() -> None:
    mask = np.array([[1, 0, 1], [1, 1, 0]], dtype=bool)
    rle = mask_to_rle(mask)
    assert rle == {"size": [2, 3], "counts": [0, 2, 1, 2, 1]}  # columns 11, 01, 10
    assert np.array_equal(rle_to_mask(rle), mask)
    assert rle_area(rle) == 4


def test_stability_score_counts() -> None:
    logits = torch.tensor([[[2.0, 0.5, -0.5, -2.0]]])
    # one logit above +1, three above -1
    assert stability_score(logits, 0.0, 1.0).tolist() == pytest.approx([1 / 3])
