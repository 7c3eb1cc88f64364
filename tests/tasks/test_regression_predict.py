"""``rsvit predict --config ...`` for height regression: GeoTIFF + preview per image, real elevation data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from PIL import Image

from rsvit.cli import main as rsvit_main
from rsvit.cli.lightning import build_cli
from rsvit.tasks.regression_predict import HeightPredictionWriter, save_height_geotiff

REPO = Path(__file__).resolve().parents[2]
NODATA = -9999.0
HOLE = (slice(30, 60), slice(100, 150))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs(data_dir: Path, tmp_path: Path, with_pairs: bool = True) -> tuple[Path, Path, Path]:
    """A folder with the real DSM and a copy holding a nodata hole; plus a config naming the data."""
    elevation = data_dir / "geotiff" / "elevation"
    with rasterio.open(elevation / "dsm.tif") as src:
        dsm, profile = src.read(1), src.profile.copy()
    images = tmp_path / "to_predict"
    images.mkdir()
    holed = dsm.copy()
    holed[HOLE] = NODATA
    for name, array in (("dsm.tif", dsm), ("dsm_holed.tif", holed)):
        with rasterio.open(images / name, "w", **profile) as dst:
            dst.write(array[None])
    config = tmp_path / "data.yaml"
    data = {
        "pairs": [[str(elevation / "dsm.tif"), str(elevation / "hag.tif")]],
        "in_chans": 1,
        "mean": [15.0],
        "std": [5.0],
        "predict_images": str(images),
    }
    if not with_pairs:
        data["pairs"] = None  # as `--data.pairs null` does on the command line
    config.write_text(yaml.safe_dump({"data": data}))
    return images, config, tmp_path / "predictions"


@pytest.mark.parametrize("with_pairs", [True, False], ids=["with-training-pairs", "images-only"])
def test_predict_writes_heights_on_the_source_grid(data_dir: Path, tmp_path: Path, with_pairs: bool) -> None:
    images, data_config, out = _inputs(data_dir, tmp_path, with_pairs)
    args = [
        "--config", str(REPO / "configs/regression/height_quick.yaml"), "--config", str(data_config),
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", f"--prediction_writer.output_dir={out}",
    ]  # fmt: skip
    assert rsvit_main(["predict", *args]) == 0

    written = sorted(p.name for p in out.iterdir())
    assert written == ["dsm.png", "dsm.tif", "dsm_holed.png", "dsm_holed.tif"]
    # The same seeded model, built again, predicts the values directly.
    cli = build_cli(args, run=False)
    model = cli.model.model.eval()
    for name in ("dsm", "dsm_holed"):
        with rasterio.open(images / f"{name}.tif") as src, rasterio.open(out / f"{name}.tif") as pred:
            assert (pred.count, pred.dtypes[0]) == (1, "float32")
            assert pred.nodata is not None and np.isnan(pred.nodata)
            assert pred.crs == src.crs and pred.transform == src.transform
            assert (pred.height, pred.width) == (src.height, src.width) == (259, 283)
            raw, heights = src.read(1), pred.read(1)
        nodata = raw == NODATA
        assert nodata.sum() == (30 * 50 if name == "dsm_holed" else 0)
        np.testing.assert_array_equal(np.isnan(heights), nodata)
        x = torch.from_numpy(np.where(nodata, 0.0, (raw - 15.0) / 5.0).astype(np.float32))[None, None]
        with torch.no_grad():
            direct = model(x)[0].numpy()
        spread = float(np.ptp(direct[~nodata]))
        np.testing.assert_allclose(heights[~nodata], direct[~nodata], rtol=1e-4, atol=1e-4 * spread)
        with Image.open(out / f"{name}.png") as png:
            assert png.width > 1.5 * png.height  # image | prediction side by side, with the colour bar
        assert (out / f"{name}.png").stat().st_size > 10_000


def test_height_geotiff_without_georeference(tmp_path: Path) -> None:
    heights = np.arange(12, dtype=np.float32).reshape(3, 4)
    valid = np.ones((3, 4), dtype=bool)
    valid[0, 0] = False
    path = save_height_geotiff(tmp_path / "plain.tif", heights, valid, source=tmp_path / "missing.tif")
    with rasterio.open(path) as src:
        assert src.crs is None and src.dtypes[0] == "float32"
        out = src.read(1)
    assert np.isnan(out[0, 0]) and np.array_equal(out.ravel()[1:], heights.ravel()[1:])
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        save_height_geotiff(tmp_path / "bad.tif", heights[None])
    with pytest.raises(ValueError, match="valid has shape"):
        save_height_geotiff(tmp_path / "bad.tif", heights, valid[:2])
    assert HeightPredictionWriter().interval.on_batch


def test_images_only_data_refuses_training_with_a_clear_error(data_dir: Path) -> None:
    from rsvit.datamodules import HeightDataModule

    data = HeightDataModule(predict_images=str(data_dir / "geotiff" / "elevation" / "dsm.tif"), in_chans=1)
    assert data.pixel_size == 2.0  # metres, from the image to predict (EPSG:26918)
    data.setup("predict")
    with pytest.raises(ValueError, match=r"no train pairs configured: set data\.pairs"):
        data.setup("fit")
    with pytest.raises(ValueError, match="or predict_images"):
        HeightDataModule(in_chans=1)
