"""Targets and prompts drawn from label masks: boxes hold their mask, points fall where they should."""

from __future__ import annotations

import numpy as np
import pytest

from rsvit.data.promptable import PromptSampler, mask_boxes, noisy_boxes, sample_points, target_masks

IGNORE = 255


@pytest.fixture
def labels() -> np.ndarray:
    """Background 0, two separate class-1 blobs, one class-2 blob, an ignored strip and a 2-pixel speck."""
    lab = np.zeros((40, 50), dtype=np.int64)
    lab[5:15, 5:20] = 1
    lab[25:35, 30:45] = 1
    lab[20:30, 5:12] = 2
    lab[:, 47:] = IGNORE
    lab[38, 0:2] = 2  # a speck below min_area
    return lab


def test_components_and_classes(labels: np.ndarray) -> None:
    masks, classes = target_masks(labels, "components", IGNORE, classes=(1, 2), min_area=4)
    assert classes.tolist() == [1, 1, 2]
    assert [int(m.sum()) for m in masks] == [150, 150, 70]
    masks, classes = target_masks(labels, "classes", IGNORE, classes=(1, 2), min_area=4)
    assert classes.tolist() == [1, 2]
    assert int(masks[0].sum()) == 300 and int(masks[1].sum()) == 72  # blob + speck
    for m in masks:
        assert not (m & (labels == IGNORE)).any()
    with_background, _ = target_masks(labels, "components", IGNORE, min_area=4)
    assert len(with_background) == 4  # background (class 0) is a target when not excluded


def test_tight_boxes_contain_and_touch_their_masks(labels: np.ndarray) -> None:
    masks, _ = target_masks(labels, "components", IGNORE, classes=(1, 2), min_area=1)
    boxes = mask_boxes(masks)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        ys, xs = np.nonzero(mask)
        assert xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x0, y0, x1, y1)
    with pytest.raises(ValueError, match="empty"):
        mask_boxes(np.zeros((1, 4, 4), dtype=bool))


def test_noisy_boxes_are_bounded_seeded_and_inside_the_image() -> None:
    boxes = np.array([[10, 10, 29, 19], [0, 0, 199, 99]], dtype=np.float32)
    draws = [noisy_boxes(boxes, (120, 220), np.random.default_rng(seed)) for seed in (1, 1, 2)]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])
    for noisy in draws:
        assert not np.array_equal(noisy, boxes)
        assert (noisy[:, 0::2] >= 0).all() and (noisy[:, 0::2] <= 219).all()
        assert (noisy[:, 1::2] >= 0).all() and (noisy[:, 1::2] <= 119).all()
        assert (noisy[:, 2] >= noisy[:, 0]).all() and (noisy[:, 3] >= noisy[:, 1]).all()
    many = noisy_boxes(np.repeat(boxes[:1], 2000, 0), (120, 220), np.random.default_rng(0))
    shift = many - boxes[:1]
    assert shift[:, 0].std() == pytest.approx(0.1 * 20, rel=0.1)  # 10 % of the 20-pixel width
    assert shift[:, 1].std() == pytest.approx(0.1 * 10, rel=0.1)  # 10 % of the 10-pixel height
    big = np.array([[300, 300, 1299, 1299]], np.float32).repeat(500, 0)
    jittered = noisy_boxes(big, (2000, 2000), np.random.default_rng(0))
    assert 15 < np.abs(jittered - big).max() <= 20  # 10 % of 1000 px is capped at 20 px


def test_points_inside_outside_and_padding(labels: np.ndarray) -> None:
    valid = labels != IGNORE
    mask = labels == 2
    coords, point_labels = sample_points(mask, valid, np.random.default_rng(0), 5, 7)
    assert coords.shape == (12, 2) and point_labels.tolist() == [1] * 5 + [0] * 7
    for (x, y), lab in zip(coords.astype(int), point_labels, strict=True):
        assert mask[y, x] == bool(lab)
        assert valid[y, x]
    everything = valid.copy()
    coords, point_labels = sample_points(everything, valid, np.random.default_rng(0), 2, 3)
    assert point_labels.tolist() == [1, 1, -1, -1, -1]  # nothing outside the mask is labelled
    again = sample_points(mask, valid, np.random.default_rng(0), 5, 7)
    np.testing.assert_array_equal(again[0], sample_points(mask, valid, np.random.default_rng(0), 5, 7)[0])


def test_sampler_caps_objects_and_handles_empty_masks(labels: np.ndarray) -> None:
    sampler = PromptSampler(ignore_index=IGNORE, classes=(1, 2), min_area=4, max_objects=2, num_negative=2)
    first = sampler(labels, np.random.default_rng(3))
    second = sampler(labels, np.random.default_rng(3))
    assert len(first) == 2
    for name in ("masks", "boxes", "noisy_boxes", "point_coords", "point_labels"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert first.point_coords.shape == (2, 3, 2) and first.point_labels.shape == (2, 3)
    empty = sampler(np.full((20, 30), IGNORE), np.random.default_rng(0))
    assert len(empty) == 0
    assert empty.masks.shape == (0, 20, 30) and empty.boxes.shape == (0, 4)
    assert empty.point_coords.shape == (0, 3, 2) and empty.point_labels.shape == (0, 3)
    assert len(sampler(np.zeros((20, 30), np.int64), np.random.default_rng(0))) == 0  # class 0 not wanted
    with pytest.raises(ValueError, match="objects"):
        target_masks(labels, "instances")  # type: ignore[arg-type]
