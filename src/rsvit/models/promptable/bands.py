"""Multispectral input for SAM: pick three bands, or widen the patch embedding to take all of them.

The released SAM models see RGB. Two ways to feed them an N-band raster:

* **select** three bands (:func:`select_bands`, or ``SamPredictor(model, bands=(3, 0, 1))`` for a
  false-colour NIR-R-G view); the model is untouched, so its outputs are the released model's;
* **adapt** the model to ``N`` bands (:func:`adapt_sam_in_chans`): the patch-embedding kernel is adapted the
  way rsvit's backbone factory adapts stems (timm's ``adapt_input_conv``: the RGB kernels repeated over the
  bands and rescaled by ``3 / N``), and the normalisation gets one mean/std per band. An adapted model is a
  starting point for fine-tuning; untrained, it sees the average of the bands' patterns.

Band indices are 0-based positions in the last axis of an ``(H, W, N)`` image.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from timm.models import adapt_input_conv
from torch import nn

from rsvit.models.promptable.sam import Sam

__all__ = ["adapt_sam_in_chans", "check_bands", "select_bands"]


def check_bands(bands: Sequence[int], band_count: int, needed: int | None = None) -> tuple[int, ...]:
    """Validate 0-based band indices against an image with ``band_count`` bands.

    Raises:
        ValueError: a wrong number of indices, repeated indices, or an index past the last band.
    """
    bands = tuple(int(b) for b in bands)
    if needed is not None and len(bands) != needed:
        raise ValueError(
            f"the model takes {needed} bands, {len(bands)} band indices were given: {list(bands)}"
        )
    if len(set(bands)) != len(bands):
        raise ValueError(f"band indices repeat: {list(bands)}")
    bad = [b for b in bands if not 0 <= b < band_count]
    if bad:
        raise ValueError(
            f"band indices {bad} do not exist in an image with {band_count} bands "
            f"(0-based, 0..{band_count - 1})"
        )
    return bands


def select_bands(image: np.ndarray, bands: Sequence[int]) -> np.ndarray:
    """The ``(H, W, len(bands))`` image of ``bands`` (0-based, in that order) of an ``(H, W, N)`` image."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, bands) image, got shape {image.shape}")
    bands = check_bands(bands, image.shape[2])
    return np.ascontiguousarray(image[..., list(bands)])


def adapt_sam_in_chans(
    model: Sam,
    in_chans: int,
    pixel_mean: Sequence[float] | None = None,
    pixel_std: Sequence[float] | None = None,
) -> Sam:
    """A copy of ``model`` whose image encoder takes ``in_chans`` bands.

    Args:
        model: a 3-band SAM (e.g. loaded from an official checkpoint); left unchanged.
        in_chans: bands of the new input.
        pixel_mean: per-band mean (0-255 scale) of the new input; default: the mean of the model's values
            for every band.
        pixel_std: per-band std; default like ``pixel_mean``.

    Raises:
        ValueError: ``in_chans`` below 1, or mean/std of another length.
    """
    if in_chans < 1:
        raise ValueError(f"in_chans must be at least 1, got {in_chans}")
    stats = {}
    for name, given in (("pixel_mean", pixel_mean), ("pixel_std", pixel_std)):
        current = getattr(model, name).flatten()
        if given is None:
            given = [float(current.mean())] * in_chans
        if len(given) != in_chans:
            raise ValueError(f"{name} has {len(given)} values, need one per band ({in_chans})")
        stats[name] = torch.tensor([float(v) for v in given], dtype=torch.float32).view(-1, 1, 1)
    new = copy.deepcopy(model)
    proj = new.image_encoder.trunk.patch_embed.proj
    adapted = nn.Conv2d(
        in_chans,
        proj.out_channels,
        proj.kernel_size,
        proj.stride,
        proj.padding,
        bias=proj.bias is not None,
    ).to(proj.weight.device, proj.weight.dtype)
    with torch.no_grad():
        adapted.weight.copy_(adapt_input_conv(in_chans, proj.weight.detach().clone()))
        if proj.bias is not None:
            adapted.bias.copy_(proj.bias)
    new.image_encoder.trunk.patch_embed.proj = adapted
    device = new.pixel_mean.device
    new.pixel_mean = stats["pixel_mean"].to(device)
    new.pixel_std = stats["pixel_std"].to(device)
    if new.config is not None:
        new.config = replace(
            new.config,
            in_chans=in_chans,
            pixel_mean=tuple(stats["pixel_mean"].flatten().tolist()),
            pixel_std=tuple(stats["pixel_std"].flatten().tolist()),
        )
    return new
