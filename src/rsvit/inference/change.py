"""Two-date input for change detection: both rasters must lie on one pixel grid.

A change model compares pixel (row, col) of date A with pixel (row, col) of date B, so the two rasters must
share CRS, geotransform and size. Nothing is resampled silently: a mismatch is an error that lists every
difference, so the user knows what to fix (e.g. ``gdalwarp -tr ... -te ...`` onto one grid).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["GridMismatchError", "check_same_grid", "grid_differences"]


class GridMismatchError(ValueError):
    """The two dates of a change-detection input are not co-registered on one pixel grid."""


def grid_differences(path_a: str | os.PathLike[str], path_b: str | os.PathLike[str]) -> list[str]:
    """Human-readable differences between the pixel grids of two rasters (empty when they match)."""
    import rasterio

    with rasterio.open(path_a) as a, rasterio.open(path_b) as b:
        out = []
        if a.crs != b.crs:
            name_a = a.crs.to_string() if a.crs else "none"
            name_b = b.crs.to_string() if b.crs else "none"
            out.append(f"CRS: {name_a} vs {name_b}")
        if (a.width, a.height) != (b.width, b.height):
            out.append(f"size (width x height): {a.width} x {a.height} vs {b.width} x {b.height}")
        if not a.transform.almost_equals(b.transform, precision=1e-9):
            ta, tb = a.transform, b.transform
            parts = []
            if (ta.c, ta.f) != (tb.c, tb.f):
                parts.append(f"origin ({ta.c}, {ta.f}) vs ({tb.c}, {tb.f})")
            if (ta.a, ta.e) != (tb.a, tb.e):
                parts.append(f"pixel size ({ta.a}, {ta.e}) vs ({tb.a}, {tb.e})")
            if (ta.b, ta.d) != (tb.b, tb.d):
                parts.append(f"rotation ({ta.b}, {ta.d}) vs ({tb.b}, {tb.d})")
            out.append("transform: " + "; ".join(parts or [f"{tuple(ta)[:6]} vs {tuple(tb)[:6]}"]))
        return out


def check_same_grid(path_a: str | os.PathLike[str], path_b: str | os.PathLike[str]) -> None:
    """Raises :class:`GridMismatchError` naming every difference between the two rasters' grids."""
    diffs = grid_differences(path_a, path_b)
    if diffs:
        raise GridMismatchError(
            f"the two dates are not on the same pixel grid ({Path(path_a).name} vs {Path(path_b).name}): "
            + "; ".join(diffs)
            + ". Resample one onto the other's grid first "
            "(e.g. gdalwarp with the other's -t_srs, -tr and -te)"
        )
