"""Prediction output of the height task (``rsvit predict --config ...``): a GeoTIFF and a preview per image.

:class:`HeightPredictionWriter` writes, for every image of the predict loader,

* ``<name>.tif``: one ``float32`` band of heights on the source image's grid (same size; the source's CRS
  and transform copied when it has them), nodata ``NaN`` where the image was nodata, so a GIS reads it
  without further settings;
* ``<name>.png``: image | prediction in a colour map with a colour bar in metres (or relative units for
  an ``"ssi"`` model) and a scale bar when the pixel size is known
  (:func:`~rsvit.tasks.regression.save_height_preview`).

Both are written atomically into ``<run folder>/predictions`` unless ``output_dir`` says otherwise. The
rasters come from :meth:`~rsvit.tasks.regression.DenseRegressionTask.predict_step`; for whole scenes
larger than memory use ``rsvit predict-raster`` instead (same values, windowed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioIOError

from rsvit.data.regression.datasets import projected_pixel_size
from rsvit.tasks.regression import save_height_preview
from rsvit.tasks.writers import FolderPredictionWriter
from rsvit.utils.atomic import atomic_path

__all__ = ["HeightPredictionWriter", "save_height_geotiff"]


def _source_grid(path: str | os.PathLike[str], shape: tuple[int, int]) -> dict[str, Any]:
    """CRS and transform of the source raster when it exists, is on the prediction's size and has them."""
    try:
        with rasterio.open(path) as src:
            if (src.height, src.width) != tuple(shape):
                return {}
            grid: dict[str, Any] = {}
            if src.crs is not None:
                grid["crs"] = src.crs
            if not src.transform.is_identity:
                grid["transform"] = src.transform
            return grid
    except (RasterioIOError, OSError):
        return {}


def save_height_geotiff(
    path: str | os.PathLike[str],
    heights: np.ndarray | torch.Tensor,
    valid: np.ndarray | torch.Tensor | None = None,
    source: str | os.PathLike[str] | None = None,
) -> Path:
    """Writes ``(H, W)`` heights as a float32 GeoTIFF (NaN nodata where not ``valid``), atomically.

    With ``source`` the output takes that raster's CRS and transform (when it has them and the same size).
    """
    values = np.asarray(torch.as_tensor(heights).detach().cpu(), dtype=np.float32).copy()
    if values.ndim != 2:
        raise ValueError(f"heights must be (H, W), got shape {values.shape}")
    if valid is not None:
        mask = np.asarray(torch.as_tensor(valid).cpu(), dtype=bool)
        if mask.shape != values.shape:
            raise ValueError(f"valid has shape {mask.shape}, heights {values.shape}")
        values[~mask] = np.nan
    grid = _source_grid(source, values.shape) if source else {}
    profile = {
        "driver": "GTiff",
        "height": values.shape[0],
        "width": values.shape[1],
        "count": 1,
        "dtype": "float32",
        "nodata": float("nan"),
        "compress": "deflate",
        "predictor": 3,
        **grid,
    }
    path = Path(path)
    with atomic_path(path, suffix=".tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(values[None])
        dst.set_band_description(1, "height")
    return path


def _pixel_size(path: str, fallback: float | None) -> float | None:
    """Metres per pixel of a projected source raster, else ``fallback`` (the task's)."""
    try:
        return projected_pixel_size(path) or fallback
    except (RasterioIOError, OSError):
        return fallback


class HeightPredictionWriter(FolderPredictionWriter):
    """Writes ``<name>.tif`` (float32 heights, NaN nodata, source grid) and ``<name>.png`` per image.

    Args:
        output_dir: folder (default ``<run folder>/predictions``).
        geotiff: write the height rasters.
        previews: write the colour-mapped PNGs.
    """

    columns = ("path", "prediction", "valid", "image")

    def __init__(self, output_dir: str | None = None, geotiff: bool = True, previews: bool = True) -> None:
        super().__init__(output_dir)
        self.geotiff = geotiff
        self.previews = previews

    def write_item(self, folder: Path, name: str, item: dict[str, Any], pl_module: L.LightningModule) -> None:
        path, heights, valid = item["path"], item["prediction"], item["valid"]
        if self.geotiff:
            self.written.append(save_height_geotiff(folder / f"{name}.tif", heights, valid, source=path))
        if self.previews:
            fallback = getattr(pl_module, "pixel_size", None)
            self.written.append(
                save_height_preview(
                    folder / f"{name}.png",
                    item["image"],
                    None,
                    heights,
                    valid,
                    pixel_size=_pixel_size(path, fallback) if path else fallback,
                    title=Path(path).name if path else name,
                    unit="relative" if getattr(pl_module, "relative", False) else "m",
                )
            )
