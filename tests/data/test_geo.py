"""The one raster-grid check: which aspects differ, how they read, and that both callers share it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

from rsvit.data.geo import GridMismatchError, PixelGrid, compare_grids
from rsvit.data.regression import datasets as height
from rsvit.inference import change

UTM33 = CRS.from_epsg(32633)
T = Affine(2.0, 0.0, 500000.0, 0.0, -2.0, 4500000.0)


def _grid(crs=UTM33, transform=T, width=50, height=40) -> PixelGrid:
    return PixelGrid(crs, transform, width, height)


def test_same_grid_has_no_difference_and_precision_decides_what_is_equal() -> None:
    assert compare_grids(_grid(), _grid()) == []
    nudged = _grid(transform=Affine(2.0, 0.0, 500000.0 + 1e-10, 0.0, -2.0, 4500000.0))
    assert compare_grids(_grid(), nudged) == []
    assert [d.aspect for d in compare_grids(_grid(), nudged, precision=1e-11)] == ["transform"]


def test_every_aspect_is_named_in_both_phrasings() -> None:
    other = _grid(
        crs=CRS.from_epsg(32632), transform=Affine(3.0, 0.0, 500001.0, 0.0, -3.0, 4500000.0), height=41
    )
    diffs = compare_grids(_grid(), other)
    assert [d.aspect for d in diffs] == ["crs", "size", "transform"]
    assert [d.describe() for d in diffs] == [
        "CRS: EPSG:32633 vs EPSG:32632",
        "size (width x height): 50 x 40 vs 50 x 41",
        "transform: origin (500000.0, 4500000.0) vs (500001.0, 4500000.0); "
        "pixel size (2.0, -2.0) vs (3.0, -3.0)",
    ]
    compact = [d.describe("compact") for d in diffs]
    assert compact[0] == "CRS EPSG:32633 != EPSG:32632"
    assert compact[1] == "size (height, width) (40, 50) != (41, 50)"
    assert compact[2] == f"transform {tuple(T)[:6]} != {tuple(other.transform)[:6]}"


def test_unreferenced_and_rotated_grids() -> None:
    (crs,) = compare_grids(_grid(crs=None), _grid())
    assert crs.describe() == "CRS: none vs EPSG:32633"
    assert crs.describe("compact") == "CRS None != EPSG:32633"
    (rot,) = compare_grids(_grid(), _grid(transform=T @ Affine.rotation(10)))
    assert "rotation" in rot.describe()


def test_both_callers_share_the_check_and_the_error(tmp_path: Path) -> None:
    assert change.GridMismatchError is GridMismatchError is height.GridMismatchError
    profile = {"driver": "GTiff", "count": 1, "dtype": "uint8", "crs": UTM33}
    paths = []
    for name, transform in (("a.tif", T), ("b.tif", T @ Affine.translation(2, 0))):
        path = tmp_path / name
        with rasterio.open(path, "w", width=50, height=40, transform=transform, **profile) as dst:
            dst.write(np.zeros((1, 40, 50), dtype=np.uint8))
        paths.append(path)
    a, b = (PixelGrid.read(p) for p in paths)
    assert (a.width, a.height, a.crs, a.transform) == (50, 40, UTM33, T)
    assert change.grid_differences(*paths) == [d.describe() for d in compare_grids(a, b)]
    assert height.grid_differences(a.crs, a.transform, (40, 50), b.crs, b.transform, (40, 50)) == [
        d.describe("compact") for d in compare_grids(a, b)
    ]
    with pytest.raises(GridMismatchError, match="origin"):
        change.check_same_grid(*paths)
