"""Small georeferenced GeoTIFFs cut from the real sample rasters, for tests that need a scene on disk."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rasterio
from rasterio.windows import Window


def write_crop(
    source: Path, path: Path, window: Window, bands: Sequence[int] | None = None, **creation: Any
) -> Path:
    """Writes ``window`` of ``source`` (all bands, or ``bands``) to ``path`` with its CRS and transform.

    ``creation`` adds GeoTIFF creation options (e.g. ``photometric="MINISBLACK"`` for 4 data bands).
    """
    with rasterio.open(source) as src:
        data = src.read(list(bands) if bands is not None else None, window=window)
        profile = {
            "driver": "GTiff",
            "width": int(window.width),
            "height": int(window.height),
            "count": data.shape[0],
            "dtype": src.dtypes[0],
            "crs": src.crs,
            "transform": src.window_transform(window),
            **creation,
        }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
