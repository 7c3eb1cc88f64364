"""``rsvit predict-raster`` with an exported height model on a real NAIP tile, end to end.

The model is a DenseRegressionTask network exported to a run folder with unusual per-band mean / std, so
the comparison with a direct forward pass proves that the engine applied the stored normalisation (and the
uint8 scaling) and wrote the heights on the input's grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rsvit.cli import main as rsvit_main
from rsvit.models import load_model
from rsvit.tasks.regression import DenseRegressionTask

MEAN = [0.30, 0.35, 0.40, 0.45]
STD = [0.20, 0.15, 0.25, 0.10]
HOLE = (slice(100, 140), slice(200, 260))  # nodata block written into a copy of the tile


@pytest.fixture(scope="module")
def holed_tile(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2020 NAIP tile (4 bands, uint8, nodata 0) with a block of nodata pixels in every band."""
    source = data_dir / "geotiff" / "naip" / "m_4709963_se_14_1_20200831.tif"
    with rasterio.open(source) as src:
        raw, profile = src.read(), src.profile.copy()
    assert src.nodata == 0 and raw.dtype == np.uint8 and raw.shape[0] == 4
    raw[:, HOLE[0], HOLE[1]] = 0
    path = tmp_path_factory.mktemp("naip") / "naip_holed.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(raw)
    return path


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small regression network exported like a training run does (``model.safetensors`` + metadata)."""
    torch.manual_seed(0)
    spec = {"task": "regression", "backbone": "resnet18", "head_kwargs": {"features": 16}}
    task = DenseRegressionTask(spec, in_chans=4, loss="l1", pixel_size=5.0)
    folder = tmp_path_factory.mktemp("run")
    task.export_model(
        folder / "model.safetensors",
        preprocessing={"input_size": [4, 64, 64], "mean": MEAN, "std": STD, "bands": None},
    )
    return folder


def test_predict_raster_height_on_real_tile(holed_tile: Path, run_folder: Path, tmp_path: Path) -> None:
    output = tmp_path / "height.tif"
    # One window covering the whole tile: the result must equal one forward pass over the image.
    args = ["predict-raster", "--model", str(run_folder), "--input", str(holed_tile), "--output", str(output)]
    assert rsvit_main([*args, "--window", "1024", "--overlap", "0", "--quiet"]) == 0

    with rasterio.open(holed_tile) as src, rasterio.open(output) as out:
        raw = src.read()
        assert (out.count, out.dtypes[0]) == (1, "float32")
        assert out.nodata is not None and np.isnan(out.nodata)
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height) == (src.width, src.height) == (934, 723)
        heights = out.read(1)

    nodata = (raw == 0).all(0)
    assert nodata[HOLE].all() and nodata.sum() == 40 * 60  # the real tile has no nodata of its own
    np.testing.assert_array_equal(np.isnan(heights), nodata)

    model, spec, meta = load_model(run_folder / "model.safetensors")
    assert spec.task == "regression" and list(meta.mean) == MEAN and list(meta.std) == STD
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    scaled = torch.from_numpy(raw).float() / 255.0
    x = torch.where(torch.from_numpy(nodata), 0.0, (scaled - mean) / std)
    with torch.no_grad():
        direct = model.eval()(x[None])[0].numpy()
        unnormalised = model(torch.where(torch.from_numpy(nodata), 0.0, scaled)[None])[0].numpy()
    valid = ~nodata
    spread = float(np.ptp(direct[valid]))
    assert spread > 0
    np.testing.assert_allclose(heights[valid], direct[valid], rtol=1e-4, atol=1e-4 * spread)
    # Control: without the stored normalisation the values would be far off.
    assert np.abs(unnormalised[valid] - heights[valid]).max() > 0.05 * spread
