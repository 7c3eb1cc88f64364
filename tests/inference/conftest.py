"""Helpers for the inference tests: small rasters on disk and tiny dense models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine
from torch import nn

TRANSFORM = Affine(2.0, 0.0, 500000.0, 0.0, -2.0, 4500000.0)  # 2 m pixels, UTM 33N


def _write_raster(
    path: Path,
    array: np.ndarray,
    *,
    crs: str | None = "EPSG:32633",
    transform: Any = TRANSFORM,
    nodata: float | None = None,
    **profile: Any,
) -> Path:
    array = array[None] if array.ndim == 2 else array
    options = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        **profile,
    }
    with rasterio.open(path, "w", **options) as dst:
        dst.write(array)
    return path


def _conv_model(in_chans: int = 3, classes: int = 3, hidden: int = 8, seed: int = 0) -> nn.Module:
    """Two 3x3 convolutions: translation-equivariant, 5x5 receptive field (window borders matter)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_chans, hidden, 3, padding=1), nn.Tanh(), nn.Conv2d(hidden, classes, 3, padding=1)
    ).eval()


def _pixel_model(in_chans: int = 3, classes: int = 3, seed: int = 0) -> nn.Module:
    """A per-pixel classifier (1x1 convolutions): its output cannot depend on the window."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(in_chans, 8, 1), nn.Tanh(), nn.Conv2d(8, classes, 1)).eval()


def _scene(height: int, width: int, bands: int = 3, seed: int = 0) -> np.ndarray:
    """uint8 imagery with smooth structure and noise, so class maps have regions and boundaries."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((bands, height, width), dtype=np.uint8)
    for b in range(bands):
        field = np.sin(x / (13.0 + 5 * b)) * np.cos(y / (17.0 + 3 * b))
        out[b] = np.clip(128 + 90 * field + rng.normal(0, 12, (height, width)), 0, 255).astype(np.uint8)
    return out


@pytest.fixture
def write_raster() -> Callable[..., Path]:
    return _write_raster


@pytest.fixture
def conv_model() -> Callable[..., nn.Module]:
    return _conv_model


@pytest.fixture
def pixel_model() -> Callable[..., nn.Module]:
    return _pixel_model


@pytest.fixture
def scene() -> Callable[..., np.ndarray]:
    return _scene
