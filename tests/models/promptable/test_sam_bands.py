"""Band selection and band adaptation for multispectral input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsvit.models.promptable import Sam, SamPredictor, adapt_sam_in_chans, select_bands


def _rgbn(sam_io: dict) -> np.ndarray:
    rgb = sam_io["image_u8"].numpy()
    nir = (255 - rgb[..., :1]).astype(np.uint8)
    return np.concatenate([rgb, nir], axis=-1)


def test_select_bands_order_and_errors() -> None:
    image = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    out = select_bands(image, (4, 0, 1))
    assert out.shape == (2, 3, 3)
    assert np.array_equal(out[..., 0], image[..., 4]) and np.array_equal(out[..., 2], image[..., 1])
    with pytest.raises(ValueError, match="do not exist"):
        select_bands(image, (0, 1, 5))
    with pytest.raises(ValueError, match="repeat"):
        select_bands(image, (0, 0, 1))


def test_predictor_bands_select_rgb_of_rgbn(sam_tiny: Sam, sam_io: dict) -> None:
    predictor = SamPredictor(sam_tiny, bands=(0, 1, 2))
    predictor.set_image(_rgbn(sam_io))
    assert (predictor.get_image_embedding() - sam_io["image_embedding"]).abs().max().item() <= 1e-5


def test_predictor_wrong_band_count_names_the_fix(sam_tiny: Sam, sam_io: dict) -> None:
    with pytest.raises(ValueError, match=r"takes 3 bands, the image has 4.*bands="):
        SamPredictor(sam_tiny).set_image(_rgbn(sam_io))
    with pytest.raises(ValueError, match="takes 3 bands, 2 band indices"):
        SamPredictor(sam_tiny, bands=(0, 1))
    with pytest.raises(ValueError, match="do not exist"):
        SamPredictor(sam_tiny, bands=(0, 1, 7)).set_image(_rgbn(sam_io))


def test_adapted_model_sees_repeated_bands_like_the_original(sam_tiny: Sam, sam_io: dict) -> None:
    # Kernels repeated over 6 bands and scaled by 3/6: an image made of RGB twice embeds like RGB.
    mean = sam_tiny.pixel_mean.flatten().tolist() * 2
    std = sam_tiny.pixel_std.flatten().tolist() * 2
    adapted = adapt_sam_in_chans(sam_tiny, 6, pixel_mean=mean, pixel_std=std)
    assert adapted.config.in_chans == 6
    assert sam_tiny.image_encoder.trunk.patch_embed.proj.in_channels == 3  # original untouched
    rgb = sam_io["image_u8"].numpy()
    predictor = SamPredictor(adapted)
    predictor.set_image(np.concatenate([rgb, rgb], axis=-1))
    assert (predictor.get_image_embedding() - sam_io["image_embedding"]).abs().max().item() <= 1e-4
    masks, iou, _ = predictor.predict(point_coords=[[100, 80]], point_labels=[1])
    assert masks.shape == (3, *rgb.shape[:2]) and np.isfinite(iou).all()


def test_adapt_defaults_and_errors(sam_tiny: Sam) -> None:
    adapted = adapt_sam_in_chans(sam_tiny, 4)
    assert adapted.pixel_mean.shape == (4, 1, 1)
    assert torch.allclose(adapted.pixel_mean.flatten(), sam_tiny.pixel_mean.mean().expand(4))
    assert "pixel_mean" not in adapted.state_dict()  # still non-persistent
    with pytest.raises(ValueError, match="one per band"):
        adapt_sam_in_chans(sam_tiny, 4, pixel_mean=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 1"):
        adapt_sam_in_chans(sam_tiny, 0)
