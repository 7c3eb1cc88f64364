"""Two-date input for change detection: both rasters must lie on one pixel grid.

A change model compares pixel (row, col) of date A with pixel (row, col) of date B, so the two rasters must
share CRS, geotransform and size. Nothing is resampled silently: a mismatch is an error that lists every
difference, so the user knows what to fix (e.g. ``gdalwarp -tr ... -te ...`` onto one grid). The comparison
itself is :func:`rsvit.data.geo.compare_grids`, shared with the height-target reader.
"""

from __future__ import annotations

import os
from pathlib import Path

from rsvit.data.geo import GridMismatchError, PixelGrid, compare_grids

__all__ = ["GridMismatchError", "check_same_grid", "grid_differences"]


def grid_differences(path_a: str | os.PathLike[str], path_b: str | os.PathLike[str]) -> list[str]:
    """Human-readable differences between the pixel grids of two rasters (empty when they match)."""
    return [d.describe() for d in compare_grids(PixelGrid.read(path_a), PixelGrid.read(path_b))]


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
