"""Transforms after the RSP recipe: timm pipelines for RGB, tensor pipelines for other bands, Mixup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.data import Mixup
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing

from rsvit.data.classification.transforms import RSP_AUTO_AUGMENT, SceneTransform, build_mixup


def _rgb(h=60, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)


def test_train_transform_is_the_rsp_timm_pipeline():
    t = SceneTransform(True, 32)
    kinds = [type(step) for step in t._rgb.transforms]
    assert RandAugment in kinds and RandomErasing in kinds
    assert t.options["auto_augment"] == RSP_AUTO_AUGMENT
    out = t(_rgb())
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


def test_eval_transform_resizes_and_centre_crops_deterministically():
    t = SceneTransform(False, 32, crop_pct=0.875)
    image = _rgb(100, 50)
    a, b = t(image), t(image)
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    # Normalised with the ImageNet statistics: a constant 0.485*255 red image has red channel ~0.
    red = np.zeros((3, 40, 40), dtype=np.uint8)
    red[0] = round(0.485 * 255)
    assert abs(float(t(red)[0].mean())) < 0.02


def test_multiband_and_16bit_go_through_the_tensor_pipeline():
    mean, std = [0.5] * 4, [0.2] * 4
    image = np.random.default_rng(0).integers(0, 65535, (4, 50, 70), dtype=np.uint16)
    train = SceneTransform(True, 24, mean=mean, std=std, re_prob=1.0)
    assert train(image).shape == (4, 24, 24)
    evaluation = SceneTransform(False, 24, mean=mean, std=std, crop_pct=1.0)
    flat = np.full((4, 30, 30), 65535 // 2, dtype=np.uint16)
    assert torch.allclose(evaluation(flat), torch.zeros(4, 24, 24), atol=1e-3)
    rgb16 = SceneTransform(False, 24)
    assert rgb16(image[:3]).shape == (3, 24, 24)


def test_band_count_must_match_mean_and_std():
    with pytest.raises(ValueError, match="image has 4 bands but mean/std are given for 3"):
        SceneTransform(False, 16)(np.zeros((4, 20, 20), dtype=np.uint8))
    with pytest.raises(ValueError, match="mean has 4 values but std has 3"):
        SceneTransform(False, 16, mean=[0.5] * 4, std=[0.2] * 3)


def test_mixup_with_label_smoothing_makes_soft_targets():
    mixup = build_mixup(5, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    assert isinstance(mixup, Mixup)
    x = torch.randn(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    _, targets = mixup(x, y)
    assert targets.shape == (4, 5)
    assert torch.allclose(targets.sum(1), torch.ones(4))
    assert float(targets.min()) >= 0.1 / 5 - 1e-6  # smoothing leaves mass on every class
    assert build_mixup(5, mixup_alpha=0.0, cutmix_alpha=0.0) is None
