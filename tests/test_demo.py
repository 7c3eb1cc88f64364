"""``rsvit demo``: the quick start a new user runs first."""

from __future__ import annotations

import json

import numpy as np
import rasterio
from PIL import Image

from rsvit.cli import main
from rsvit.demo import feature_pca_image, sample_image_path


def test_demo_on_bundled_multispectral_sample(tmp_path, capsys):
    assert main(["demo", "--no-table", "--backbone-only", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 bands, 512x640" in out
    assert "stride 32: (1, 512, 16, 20)" in out
    png = tmp_path / "features.png"
    with Image.open(png) as img:
        assert img.width > 600 and img.height > 200
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_demo_on_real_rgb_image_with_band_selection(tmp_path, capsys, data_dir):
    image = data_dir / "geotiff" / "RGB.byte.tif"
    assert (
        main(
            [
                "demo",
                "--no-table",
                "--image",
                str(image),
                "--bands",
                "3,2,1",
                "--backbone",
                "resnet50",
                "--steps",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "3 bands, 718x791" in out
    # --image is mapped too, on its own grid
    with rasterio.open(image) as src, rasterio.open(tmp_path / "map.tif") as dst:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
    assert f"your raster {image}" in out


def test_demo_reports_bad_band_selection(tmp_path, capsys):
    code = main(
        ["demo", "--no-table", "--image", str(sample_image_path()), "--bands", "1,7", "--out", str(tmp_path)]
    )
    assert code == 1
    assert "cannot select [7]" in capsys.readouterr().err


def test_feature_pca_separates_two_regions():
    feat = np.zeros((8, 4, 6), dtype=np.float32)
    feat[:, :, :3] = np.arange(8)[:, None, None]
    feat[:, :, 3:] = -np.arange(8)[:, None, None]
    import torch

    rgb = feature_pca_image(torch.from_numpy(feat))
    assert rgb.shape == (4, 6, 3)
    assert np.abs(rgb[:, :3] - rgb[:, 3:]).max() > 0.5  # the two halves get different colours
    assert np.allclose(rgb[:, 0], rgb[:, 2])  # identical features get identical colours


def test_full_demo_trains_maps_and_previews(tmp_path, capsys):
    """The README's main job, shortened to a few training steps: every promised output appears."""

    assert main(["demo", "--no-table", "--steps", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"demo outputs in {tmp_path.resolve()}" in out
    with rasterio.open(sample_image_path()) as src, rasterio.open(tmp_path / "map.tif") as dst:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert dst.read(1).max() < 6  # six Dubai classes
    features = json.loads((tmp_path / "map.geojson").read_text())["features"]
    assert features and all(f["geometry"]["type"] in ("Polygon", "MultiPolygon") for f in features)
    with Image.open(tmp_path / "preview.png") as img:
        assert img.width > img.height
    (run,) = [p.parent for p in tmp_path.glob("training/**/model.safetensors")]

    # The held-out Dubai tile is mapped and its mIoU is the one its map and labels give.
    from rsvit.data.segmentation import DubaiDataset
    from rsvit.metrics.segmentation import confusion_metrics

    sample = DubaiDataset(sample_image_path().parent / "dubai_mini", tiles=[6])[0]
    with rasterio.open(tmp_path / "heldout_map.tif") as src:
        predicted = src.read(1).astype(np.int64)
    truth = sample["mask"].numpy()
    assert predicted.shape == truth.shape
    valid = truth < 6
    confusion = np.bincount(truth[valid] * 6 + predicted[valid], minlength=36).reshape(6, 6)
    import torch

    miou = float(confusion_metrics(torch.from_numpy(confusion))["mIoU"])
    assert f"mIoU {miou:.3f}" in out
    assert (tmp_path / "heldout_preview.png").is_file()
    # ... and the next commands name the model just trained.
    assert f"rsvit predict-raster --model {run / 'model.safetensors'}" in out
    assert "rsvit fit --config" in out and f"rsvit export-backbone {run}" in out
    assert f"rsvit export {run / 'model.safetensors'} model.onnx" in out
