"""Two-date change detection through the same engine, and exact messages for grids that differ."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine
from torch import nn

from rsvit.inference import GridMismatchError, check_same_grid, predict_raster


class AbsDiffChange(nn.Module):
    """A per-pixel change model: 'changed' where the dates differ by more than 0.1 on average."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(50.0))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        score = ((a - b).abs().mean(dim=1, keepdim=True) - 0.1) * self.gain
        return torch.cat([torch.zeros_like(score), score], dim=1)


def test_naip_dates_on_different_grids_are_refused_with_every_difference(data_dir):
    naip = data_dir / "geotiff" / "naip"
    a, b = naip / "m_4709963_se_14_1_20090818.tif", naip / "m_4709963_se_14_1_20200831.tif"
    with pytest.raises(GridMismatchError) as info:
        check_same_grid(a, b)
    message = str(info.value)
    assert "size (width x height): 934 x 724 vs 934 x 723" in message
    assert "transform: origin (485900.0, 5209247.0) vs (485899.0, 5209246.0)" in message
    assert "CRS" not in message  # both are EPSG:26914
    assert "gdalwarp" in message


def test_crs_and_pixel_size_differences_are_named(tmp_path, write_raster, scene):
    image = scene(40, 50)
    a = write_raster(tmp_path / "a.tif", image, crs="EPSG:32633")
    b = write_raster(
        tmp_path / "b.tif", image, crs="EPSG:32632", transform=Affine(3.0, 0, 500000.0, 0, -3.0, 4500000.0)
    )
    with pytest.raises(
        GridMismatchError, match=r"CRS: EPSG:32633 vs EPSG:32632.*pixel size \(2.0, -2.0\) vs \(3.0, -3.0\)"
    ):
        check_same_grid(a, b)
    with pytest.raises(GridMismatchError):
        predict_raster(AbsDiffChange(), a, tmp_path / "change.tif", input_b=b, progress=False)
    assert not (tmp_path / "change.tif").exists()


def test_change_map_from_two_dates(tmp_path, write_raster, scene):
    before = scene(300, 260, seed=1)
    after = before.copy()
    after[:, 100:180, 50:120] = 255 - after[:, 100:180, 50:120]  # something changed here
    after[:, 0:30, 0:30] = 0  # and the second date has a nodata corner
    a = write_raster(tmp_path / "before.tif", before, nodata=0)
    b = write_raster(tmp_path / "after.tif", after, nodata=0)
    out = tmp_path / "change.tif"
    report = predict_raster(AbsDiffChange(), a, out, input_b=b, window=128, overlap=32, progress=False)
    with rasterio.open(out) as dst:
        change = dst.read(1)
    diff = np.abs(before.astype(np.float32) - after.astype(np.float32)).mean(axis=0) / 255
    expected = (diff > 0.1).astype(np.uint8)
    nodata = (before == 0).all(axis=0) | (after == 0).all(axis=0)
    expected[nodata] = 255
    np.testing.assert_array_equal(change, expected)
    assert report.windows > 4
    with pytest.raises(ValueError, match=r"need two dates.*--input-b"):
        predict_raster(AbsDiffChange(), a, tmp_path / "x.tif", task="change", progress=False)
