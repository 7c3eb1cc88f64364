"""Reading images of any format, size, band count and bit depth into ``(C, H, W)`` arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["RASTER_SUFFIXES", "read_image", "to_unit_range"]

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2"}


def read_image(path: str | Path, bands: list[int] | None = None) -> np.ndarray:
    """Reads an image as a ``(C, H, W)`` array in its stored dtype.

    GeoTIFF and other rasters go through rasterio (any band count, 1-based ``bands`` selection);
    JPEG/PNG through Pillow (grey, RGB or RGBA become 1, 3 or 4 bands).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    if path.suffix.lower() in RASTER_SUFFIXES:
        import rasterio
        import rasterio.errors

        with rasterio.open(path) as src:
            if bands is not None:
                bad = [b for b in bands if not 1 <= b <= src.count]
                if bad:
                    raise ValueError(f"{path} has bands 1..{src.count}; cannot select {bad}")
            try:
                return src.read(bands)
            except rasterio.errors.RasterioIOError as err:
                raise rasterio.errors.RasterioIOError(
                    f"cannot read the pixels of {path}: GDAL could not decode them. The file is damaged or "
                    "truncated; re-download or re-export it"
                ) from err
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if bands is not None:
        bad = [b for b in bands if not 1 <= b <= arr.shape[0]]
        if bad:
            raise ValueError(f"{path} has bands 1..{arr.shape[0]}; cannot select {bad}")
        arr = arr[[b - 1 for b in bands]]
    return arr


def to_unit_range(array: np.ndarray) -> np.ndarray:
    """Scales integer imagery to [0, 1] by its dtype's range; floats are returned as float32 unchanged.

    8-bit and 16-bit sensors both end up in the range the models were trained for; float rasters are
    assumed to be reflectances or already normalised.
    """
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    return array.astype(np.float32, copy=False)
