"""Windowed reads of a scene, turned into what a model expects: selected bands, scaled, normalised, masked.

Scaling: integer rasters are divided by their dtype's maximum (8-bit by 255, 16-bit by 65535), float rasters
are taken as they are (reflectance or already 0-1). A model trained on another range declares it in its
metadata as ``extra["input_scale"]`` (the divisor, e.g. ``10000`` for Sentinel-2 L2A reflectance); an explicit
``scale`` argument wins over both. Then ``(x - mean) / std`` per band when the metadata carries them.

Validity: a pixel is valid when GDAL's mask says so for at least one selected band (the nodata value, an
alpha band or an internal mask, via ``read_masks``; the same rule as GDAL's dataset mask) and all its
values are finite. Invalid pixels are fed to the model as 0 after normalisation and marked nodata in
the outputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["InputError", "SceneReader", "gdal_detail", "parse_bands"]


_GDAL_GENERIC = ("read failed. see previous exception", "write failed. see previous exception")


def gdal_detail(err: BaseException) -> str:
    """GDAL's own reason as ``" (reason)"``, or nothing when it only points at an earlier message."""
    text = str(err).strip().rstrip(".")
    if not text or text.lower().startswith(_GDAL_GENERIC):
        return ""
    return f" ({text})"


class InputError(ValueError):
    """The input raster cannot be used as given (unreadable, damaged, wrong bands); the message says why."""


def parse_bands(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"1,2,3"`` or ``[1, 2, 3]`` -> ``(1, 2, 3)`` (1-based band numbers, as GDAL counts them)."""
    if text is None:
        return None
    if isinstance(text, str):
        try:
            values = [int(v) for v in text.replace(" ", "").split(",") if v]
        except ValueError:
            raise InputError(f"bands must be comma-separated band numbers like 1,2,3, got {text!r}") from None
    else:
        values = [int(v) for v in text]
    if not values or min(values) < 1:
        raise InputError(f"bands are numbered from 1 (GDAL convention), got {text!r}")
    return tuple(values)


class SceneReader:
    """Reads model-ready windows from one raster; picklable (the file is reopened in each process).

    Args:
        path: the raster (anything GDAL opens).
        bands: 1-based bands to use; default all bands, minus a trailing alpha band when that leaves exactly
            ``expected_bands``.
        expected_bands: bands the model takes (checked, with a clear error); ``None`` skips the check.
        mean, std: per-band normalisation in the units after scaling (usually from ``WeightsMetadata``).
        scale: divisor turning raw values into model units (see the module docstring).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        bands: Sequence[int] | None = None,
        expected_bands: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        scale: float | None = None,
    ) -> None:
        import rasterio
        from rasterio.errors import RasterioIOError

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"input raster not found: {self.path}")
        try:
            src = rasterio.open(self.path)
        except RasterioIOError as err:
            raise InputError(f"{self.path} is not a raster GDAL can open ({err}); check the file") from err
        with src:
            self.width, self.height, self.count = src.width, src.height, src.count
            self.crs, self.transform = src.crs, src.transform
            self.profile = src.profile
            colorinterp = src.colorinterp
            dtypes = src.dtypes
            flags = src.mask_flag_enums
        self.bands = self._choose_bands(bands, expected_bands, colorinterp)
        dtype = np.dtype(dtypes[self.bands[0] - 1])
        if len({dtypes[b - 1] for b in self.bands}) > 1:
            raise InputError(f"{self.path}: the selected bands {list(self.bands)} have different data types")
        self.dtype = dtype
        if scale is None:
            scale = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
        if not scale > 0:
            raise InputError(f"scale must be positive, got {scale}")
        self.scale = float(scale)
        n = len(self.bands)
        for name, values in (("mean", mean), ("std", std)):
            if values is not None and len(values) != n:
                raise InputError(
                    f"the model's {name} has {len(values)} values but {n} bands are read from {self.path}; "
                    "select matching bands with --bands"
                )
        # scale, mean and std folded into one multiply-add per pixel: x * gain + offset
        mean_arr = np.zeros(n, np.float64) if mean is None else np.asarray(mean, np.float64)
        std_arr = np.ones(n, np.float64) if std is None else np.asarray(std, np.float64)
        if not (std_arr > 0).all():
            raise InputError(f"the model's std must be positive, got {list(std_arr)}")
        self.gain = (1.0 / (self.scale * std_arr)).astype(np.float32).reshape(n, 1, 1)
        self.offset = (-mean_arr / std_arr).astype(np.float32).reshape(n, 1, 1)
        from rasterio.enums import MaskFlags

        # A mask needs reading only if some band has nodata, alpha or a mask; floats may also hold NaN.
        self._all_valid = all(flags[b - 1] == [MaskFlags.all_valid] for b in self.bands)
        self._is_float = np.issubdtype(dtype, np.floating)
        self._dataset: Any = None

    def _choose_bands(
        self, bands: Sequence[int] | None, expected: int | None, colorinterp: Sequence[Any]
    ) -> tuple[int, ...]:
        from rasterio.enums import ColorInterp

        if bands is not None:
            bands = tuple(int(b) for b in bands)
            bad = [b for b in bands if not 1 <= b <= self.count]
            if bad:
                raise InputError(f"{self.path} has bands 1..{self.count}; cannot select {bad}")
        else:
            bands = tuple(range(1, self.count + 1))
            if expected is not None and self.count == expected + 1 and colorinterp[-1] == ColorInterp.alpha:
                bands = bands[:-1]  # RGBA into an RGB model: the alpha band is the mask, not data
        if expected is not None and len(bands) != expected:
            if self.count >= expected:
                advice = (
                    f"choose {expected} of its {self.count} band(s) with --bands (e.g. --bands "
                    f"{','.join(str(i + 1) for i in range(expected))}) or"
                )
            else:  # too few bands: only repeating one can make up the number
                repeated = ",".join(str(min(i + 1, self.count)) for i in range(expected))
                advice = (
                    f"feed a band more than once (e.g. --bands {repeated}; sensible when the model copes "
                    "with grey input) or"
                )
            raise InputError(
                f"{self.path} provides {len(bands)} band(s) {list(bands)} but the model expects {expected}; "
                f"{advice} use a raster with {expected} bands"
            )
        return bands

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_dataset"] = None
        return state

    def close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None

    def _open(self) -> Any:
        if self._dataset is None:
            import rasterio

            self._dataset = rasterio.open(self.path)
        return self._dataset

    def read(
        self, y0: int, x0: int, height: int, width: int, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(image (C, h, w) float32, valid (h, w) bool or None when every pixel is valid)``.

        ``out``: a float32 ``(C, h, w)`` array to fill instead of allocating one (a slot of a batch).
        """
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        src = self._open()
        window = Window(x0, y0, width, height)
        try:
            raw = src.read(self.bands, window=window)
            masks = None if self._all_valid else src.read_masks(self.bands, window=window)
        except RasterioIOError as err:
            raise InputError(
                f"cannot read rows {y0}..{y0 + height - 1}, columns {x0}..{x0 + width - 1} of {self.path}: "
                f"GDAL could not decode those pixels{gdal_detail(err)}. The file is damaged or truncated; "
                "re-download or re-export it"
            ) from err
        valid = None if masks is None else (masks > 0).any(axis=0)
        if self._is_float:
            finite = np.isfinite(raw).all(axis=0)
            if not finite.all():
                valid = finite if valid is None else valid & finite
        image = np.empty(raw.shape, np.float32) if out is None else out
        np.multiply(raw, self.gain, out=image, casting="unsafe")
        image += self.offset
        if valid is not None:
            image[:, ~valid] = 0.0
        return image, valid
