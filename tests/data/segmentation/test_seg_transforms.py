"""Joint image + mask augmentation keeps image and mask aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsvit.data.segmentation.transforms import SegmentationTransform, photometric_distortion


def _encoded(h: int = 40, w: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Image whose first band equals the mask (distinct per pixel up to 250) and whose other bands are
    the row and column, so any misalignment or shape error shows."""
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 250, (h, w)).astype(np.int64)
    rows, cols = np.mgrid[0:h, 0:w]
    image = np.stack([mask, rows, cols]).astype(np.uint8)
    return image, mask


@pytest.mark.parametrize("seed", range(8))
def test_crop_flip_rotate_keep_alignment(seed: int) -> None:
    torch.manual_seed(seed)
    image, mask = _encoded(40, 40)
    transform = SegmentationTransform(
        True, crop_size=24, mean=(0, 0, 0), std=(1, 1, 1), ignore_index=255, hflip=0.5, vflip=0.5, rot90=0.5
    )
    out = transform(image, mask)
    assert out["image"].shape == (3, 24, 24) and out["mask"].shape == (24, 24)
    decoded = torch.round(out["image"][0] * 255).long()
    assert torch.equal(decoded, out["mask"])


def test_transforms_are_not_identity() -> None:
    image, mask = _encoded(40, 40)
    transform = SegmentationTransform(True, crop_size=24, mean=(0, 0, 0), std=(1, 1, 1), hflip=1.0, rot90=1.0)
    torch.manual_seed(0)
    out = transform(image, mask)
    rows = torch.round(out["image"][1] * 255)
    cols = torch.round(out["image"][2] * 255)
    # After a flip and a rotation, the row band no longer increases down the columns of the crop.
    assert not (torch.all(rows[1:, :] - rows[:-1, :] == 1) and torch.all(cols[:, 1:] - cols[:, :-1] == 1))


def test_rescale_uses_nearest_for_masks() -> None:
    image, mask = _encoded(30, 30)
    transform = SegmentationTransform(
        True, crop_size=None, mean=(0, 0, 0), std=(1, 1, 1), ratio_range=(2.0, 2.0), hflip=0
    )
    out = transform(image, mask)
    assert out["mask"].shape == (60, 60)
    assert set(out["mask"].unique().tolist()) <= set(np.unique(mask).tolist())
    assert torch.equal(out["mask"][::2, ::2], torch.from_numpy(mask))


def test_photometric_changes_only_the_image() -> None:
    image, mask = _encoded(32, 32)
    torch.manual_seed(3)
    plain = SegmentationTransform(True, crop_size=None, mean=(0, 0, 0), std=(1, 1, 1), hflip=0)(image, mask)
    torch.manual_seed(3)
    photo = SegmentationTransform(
        True, crop_size=None, mean=(0, 0, 0), std=(1, 1, 1), hflip=0, photometric=True
    )(image, mask)
    assert torch.equal(plain["mask"], photo["mask"])
    assert photo["image"].min() >= 0 and photo["image"].max() <= 1
    changed = [not torch.equal(photometric_distortion(plain["image"]), plain["image"]) for _ in range(10)]
    assert any(changed)


def test_cat_max_ratio_avoids_single_class_crops() -> None:
    mask = np.zeros((64, 64), dtype=np.int64)
    mask[:, 56:] = 1  # class 1 only in a thin strip
    image = np.zeros((3, 64, 64), dtype=np.uint8)
    transform = SegmentationTransform(
        True, crop_size=16, mean=(0, 0, 0), std=(1, 1, 1), cat_max_ratio=0.75, hflip=0
    )
    torch.manual_seed(0)
    mixed = sum(int(len(transform(image, mask)["mask"].unique()) > 1) for _ in range(40))
    plain = SegmentationTransform(True, crop_size=16, mean=(0, 0, 0), std=(1, 1, 1), hflip=0)
    torch.manual_seed(0)
    mixed_plain = sum(int(len(plain(image, mask)["mask"].unique()) > 1) for _ in range(40))
    assert mixed > mixed_plain


def test_eval_only_normalises() -> None:
    image = np.full((3, 7, 9), 255, dtype=np.uint8)
    out = SegmentationTransform(False, crop_size=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(image)
    assert out["image"].shape == (3, 7, 9) and "mask" not in out
    assert torch.allclose(out["image"], torch.tensor(2.0))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="bands but mean/std"):
        SegmentationTransform(False, mean=(0, 0, 0), std=(1, 1, 1))(np.zeros((4, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="mask shape"):
        SegmentationTransform(False, mean=(0, 0, 0), std=(1, 1, 1))(
            np.zeros((3, 2, 2), np.uint8), np.zeros((2, 3))
        )
    with pytest.raises(ValueError, match="ratio_range"):
        SegmentationTransform(True, ratio_range=(2.0, 1.0))
