"""One raster-grid check: do two rasters put pixel (row, col) at the same place on the ground?

Two rasters share a pixel grid when they have the same CRS, the same size and the same geotransform (to
``precision``). Pixel-wise work across rasters (two dates of a change pair, an image and its height
target) needs that, and nothing is resampled silently: :func:`compare_grids` lists every aspect that
differs, so an error can name each one and the user knows what to fix.

Two phrasings of a difference exist because two error messages are built from them: ``"sentence"``
(``CRS: A vs B``, the transform broken down into origin / pixel size / rotation, size as width x height)
and ``"compact"`` (``CRS A != B``, whole transforms, size as ``(height, width)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["GridDifference", "GridMismatchError", "PixelGrid", "compare_grids"]

Phrasing = Literal["sentence", "compact"]


class GridMismatchError(ValueError):
    """Two rasters that must share one pixel grid do not (and nothing was asked to resample them)."""


@dataclass(frozen=True)
class PixelGrid:
    """Where a raster's pixels lie: CRS (``None`` if unreferenced), affine geotransform and size."""

    crs: Any
    transform: Any
    width: int
    height: int

    @classmethod
    def of(cls, dataset: Any) -> PixelGrid:
        """The grid of an open rasterio dataset."""
        return cls(dataset.crs, dataset.transform, int(dataset.width), int(dataset.height))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> PixelGrid:
        """The grid of the raster at ``path`` (only its header is read)."""
        import rasterio

        with rasterio.open(path) as src:
            return cls.of(src)


def _crs_name(crs: Any) -> str | None:
    return crs.to_string() if crs else None


@dataclass(frozen=True)
class GridDifference:
    """One aspect (``"crs"``, ``"size"`` or ``"transform"``) in which grid ``a`` differs from grid ``b``."""

    aspect: Literal["crs", "size", "transform"]
    a: PixelGrid
    b: PixelGrid

    def describe(self, phrasing: Phrasing = "sentence") -> str:
        """The difference in words, e.g. ``"CRS: EPSG:32633 vs EPSG:32632"`` (see the module docstring)."""
        a, b = self.a, self.b
        compact = phrasing == "compact"
        if self.aspect == "crs":
            if compact:
                return f"CRS {_crs_name(a.crs)} != {_crs_name(b.crs)}"
            return f"CRS: {_crs_name(a.crs) or 'none'} vs {_crs_name(b.crs) or 'none'}"
        if self.aspect == "size":
            if compact:
                return f"size (height, width) {(a.height, a.width)} != {(b.height, b.width)}"
            return f"size (width x height): {a.width} x {a.height} vs {b.width} x {b.height}"
        ta, tb = a.transform, b.transform
        if compact:
            return f"transform {tuple(ta)[:6]} != {tuple(tb)[:6]}"
        parts = []
        if (ta.c, ta.f) != (tb.c, tb.f):
            parts.append(f"origin ({ta.c}, {ta.f}) vs ({tb.c}, {tb.f})")
        if (ta.a, ta.e) != (tb.a, tb.e):
            parts.append(f"pixel size ({ta.a}, {ta.e}) vs ({tb.a}, {tb.e})")
        if (ta.b, ta.d) != (tb.b, tb.d):
            parts.append(f"rotation ({ta.b}, {ta.d}) vs ({tb.b}, {tb.d})")
        return "transform: " + "; ".join(parts or [f"{tuple(ta)[:6]} vs {tuple(tb)[:6]}"])


def compare_grids(a: PixelGrid, b: PixelGrid, precision: float = 1e-9) -> list[GridDifference]:
    """Every aspect in which two grids differ (CRS, size, transform; empty when they are one grid).

    Args:
        a: the first grid to compare.
        b: the second grid to compare.
        precision: largest difference of a geotransform coefficient still counted as equal.
    """
    out = []
    if a.crs != b.crs:
        out.append(GridDifference("crs", a, b))
    if (a.width, a.height) != (b.width, b.height):
        out.append(GridDifference("size", a, b))
    if not a.transform.almost_equals(b.transform, precision=precision):
        out.append(GridDifference("transform", a, b))
    return out
