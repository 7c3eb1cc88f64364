"""Image + height (DSM / nDSM) GeoTIFF pairs on the image's pixel grid, with a validity mask.

Conventions, chosen so a loss never sees a fabricated height:

* The image grid is the reference. A target on another grid (CRS, transform or size differ) is an
  error naming what differs, unless ``reproject=True``, in which case it is warped onto the image
  grid with :func:`rasterio.warp.reproject`; pixels the target does not cover become invalid.
* Target pixels equal to the nodata value (the file's, or ``target_nodata``) and NaN / inf are
  invalid. Invalid target pixels are stored as 0 in ``target`` and flagged ``False`` in ``valid``.
* Negative heights: a DSM is an elevation, so negatives (below the datum) are kept. In an nDSM
  (height above ground) they are interpolation noise; ``negative="clip"`` (default) sets them to 0,
  ``"invalid"`` masks them out and ``"keep"`` leaves them.
* A target with no valid pixel (on the image grid) raises :class:`ValueError`.
* Images alone (for prediction) are read by :func:`read_height_image` with the same scaling; their
  validity is "finite in every band and not equal to the file's nodata value in all of them" (GDAL's
  dataset mask, the rule ``predict-raster`` applies too: one dark band alone is data).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject as warp_reproject
from torch.utils.data import Dataset

from rsvit.data.geo import GridMismatchError, PixelGrid, compare_grids
from rsvit.data.io import to_unit_range

__all__ = [
    "GridMismatchError",
    "HeightImage",
    "HeightPair",
    "HeightPairDataset",
    "grid_differences",
    "projected_pixel_size",
    "read_height_image",
    "read_height_pair",
]

HeightKind = Literal["dsm", "ndsm"]
NegativePolicy = Literal["clip", "invalid", "keep"]
PathLike = str | os.PathLike[str]


@dataclass
class HeightPair:
    """One sample on the image grid: ``image`` (C, H, W) float32, ``target`` and ``valid`` (H, W)."""

    image: np.ndarray
    target: np.ndarray
    valid: np.ndarray
    crs: CRS | None
    transform: Affine


@dataclass
class HeightImage:
    """An image to predict heights for: ``image`` (C, H, W) float32 (0 where invalid), ``valid`` (H, W)."""

    image: np.ndarray
    valid: np.ndarray
    crs: CRS | None
    transform: Affine


def projected_pixel_size(path: PathLike) -> float | None:
    """Ground size of one pixel (CRS units, metres for projected data) of a raster.

    ``None`` for unreferenced or geographic (degree) rasters, where a metre scale bar would lie.
    """
    with rasterio.open(path) as src:
        if src.crs is None or not src.crs.is_projected:
            return None
        res = abs(float(src.transform.a))
    return res if res > 0 else None


def read_height_image(
    image_path: PathLike, image_bands: Sequence[int] | None = None, scale_image: bool = True
) -> HeightImage:
    """Reads an image the way :func:`read_height_pair` does, with its validity mask (nodata, NaN, inf)."""
    image_path = Path(image_path)
    if not image_path.is_file():
        raise FileNotFoundError(f"raster not found: {image_path}")
    with rasterio.open(image_path) as src:
        if image_bands is not None and any(not 1 <= b <= src.count for b in image_bands):
            raise ValueError(f"{image_path} has bands 1..{src.count}; cannot read bands {list(image_bands)}")
        raw = src.read(list(image_bands) if image_bands is not None else None)
        nodata, crs, transform = src.nodata, src.crs, src.transform
    image = to_unit_range(raw) if scale_image else raw.astype(np.float32)
    valid = np.isfinite(image).all(0)
    if nodata is not None and not np.isnan(nodata):
        valid &= ~(raw == raw.dtype.type(nodata)).all(0)
    image = np.where(valid[None], image, np.float32(0.0)).astype(np.float32)
    return HeightImage(image=image, valid=valid, crs=crs, transform=transform)


def grid_differences(
    crs_a: CRS | None,
    transform_a: Affine,
    shape_a: tuple[int, int],
    crs_b: CRS | None,
    transform_b: Affine,
    shape_b: tuple[int, int],
    precision: float = 1e-9,
) -> list[str]:
    """Human-readable differences between two grids (empty when they are the same grid)."""
    a = PixelGrid(crs_a, transform_a, width=shape_a[1], height=shape_a[0])
    b = PixelGrid(crs_b, transform_b, width=shape_b[1], height=shape_b[0])
    return [d.describe("compact") for d in compare_grids(a, b, precision)]


def _invalid_to_nan(band: np.ndarray, nodata: float | None) -> np.ndarray:
    data = band.astype(np.float32)
    bad = ~np.isfinite(data)
    if nodata is not None and not np.isnan(nodata):
        bad |= data == np.float32(nodata)
    data[bad] = np.nan
    return data


def read_height_pair(
    image_path: PathLike,
    target_path: PathLike,
    kind: HeightKind = "ndsm",
    negative: NegativePolicy = "clip",
    reproject: bool = False,
    resampling: str = "bilinear",
    image_bands: Sequence[int] | None = None,
    target_band: int = 1,
    target_nodata: float | None = None,
    scale_image: bool = True,
) -> HeightPair:
    """Reads an image and its height raster on the image grid (see the module docstring).

    ``scale_image`` maps integer imagery to [0, 1] by its dtype range; float imagery is kept as is.
    ``negative`` only applies to ``kind="ndsm"``.
    """
    if kind not in ("dsm", "ndsm"):
        raise ValueError(f"kind must be 'dsm' or 'ndsm', got {kind!r}")
    if negative not in ("clip", "invalid", "keep"):
        raise ValueError(f"negative must be 'clip', 'invalid' or 'keep', got {negative!r}")
    image_path, target_path = Path(image_path), Path(target_path)
    for p in (image_path, target_path):
        if not p.is_file():
            raise FileNotFoundError(f"raster not found: {p}")
    with rasterio.open(image_path) as img:
        image = img.read(list(image_bands) if image_bands is not None else None)
        crs, transform, shape = img.crs, img.transform, (img.height, img.width)
    with rasterio.open(target_path) as tgt:
        if not 1 <= target_band <= tgt.count:
            raise ValueError(f"{target_path} has bands 1..{tgt.count}; cannot read band {target_band}")
        nodata = target_nodata if target_nodata is not None else tgt.nodata
        band = _invalid_to_nan(tgt.read(target_band), nodata)
        diffs = grid_differences(crs, transform, shape, tgt.crs, tgt.transform, (tgt.height, tgt.width))
        if diffs and not reproject:
            raise GridMismatchError(
                f"target {target_path} is not on the grid of image {image_path}: "
                + "; ".join(diffs)
                + ". Pass reproject=True to warp the target onto the image grid."
            )
        if diffs:
            if crs is None or tgt.crs is None:
                raise GridMismatchError(
                    f"cannot reproject {target_path} onto {image_path}: both rasters need a CRS"
                )
            warped = np.full(shape, np.nan, dtype=np.float32)
            warp_reproject(
                source=band,
                destination=warped,
                src_transform=tgt.transform,
                src_crs=tgt.crs,
                src_nodata=np.nan,
                dst_transform=transform,
                dst_crs=crs,
                dst_nodata=np.nan,
                resampling=Resampling[resampling],
            )
            band = warped
    valid = np.isfinite(band)
    if kind == "ndsm" and negative != "keep":
        neg = valid & (band < 0)
        if negative == "clip":
            band[neg] = 0.0
        else:
            valid &= ~neg
    if not valid.any():
        where = " on the image grid" if diffs else ""
        raise ValueError(f"target {target_path} has no valid height pixels{where} (nodata={nodata})")
    target = np.where(valid, band, np.float32(0.0)).astype(np.float32)
    image = to_unit_range(image) if scale_image else image.astype(np.float32)
    return HeightPair(image=image, target=target, valid=valid, crs=crs, transform=transform)


class HeightPairDataset(Dataset):
    """``{"image": (C, H, W) float32, "target": (H, W) float32, "valid": (H, W) bool}`` per pair.

    ``read_kwargs`` go to :func:`read_height_pair`; ``transform`` (optional) receives and returns the
    sample dict, e.g. for cropping or flipping all three tensors together.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[PathLike, PathLike]],
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        **read_kwargs: Any,
    ) -> None:
        if not pairs:
            raise ValueError("HeightPairDataset needs at least one (image, target) pair")
        self.pairs = [(Path(i), Path(t)) for i, t in pairs]
        self.transform = transform
        self.read_kwargs = read_kwargs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, target_path = self.pairs[index]
        pair = read_height_pair(image_path, target_path, **self.read_kwargs)
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(pair.image)),
            "target": torch.from_numpy(pair.target),
            "valid": torch.from_numpy(pair.valid),
        }
        return self.transform(sample) if self.transform is not None else sample
