"""Output maps: georeferencing identical to the input, COG layout, colour table, probabilities, nodata."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from rsvit.inference import predict_raster
from rsvit.models import ModelSpec, build_model, save_model
from rsvit.weights import WeightsMetadata

PALETTE = [[10, 20, 30], [200, 0, 0], [0, 180, 60]]


@pytest.fixture
def scene_with_hole(tmp_path, write_raster, scene):
    image = scene(900, 1100)
    image[:, 100:300, 200:500] = 0  # a nodata hole (every band 0)
    image[:, :, :40] = 0  # and a nodata border
    return write_raster(tmp_path / "scene.tif", image, nodata=0, tiled=True, blockxsize=256, blockysize=256)


@pytest.fixture
def saved_model(tmp_path):
    spec = ModelSpec("segmentation", "resnet18", head="fcn", num_classes=3, head_kwargs={"channels": 16})
    path = tmp_path / "run" / "model.safetensors"
    path.parent.mkdir()
    meta = WeightsMetadata(
        classes=("water", "field", "forest"), mean=(0.5,) * 3, std=(0.25,) * 3, extra={"palette": PALETTE}
    )
    save_model(path, build_model(spec), spec, meta)
    return path


def test_class_map_grid_layout_palette_and_nodata(tmp_path, scene_with_hole, conv_model):
    meta = WeightsMetadata(
        classes=("water", "field", "forest"), mean=(0.5,) * 3, std=(0.25,) * 3, extra={"palette": PALETTE}
    )
    out = tmp_path / "maps" / "map.tif"
    report = predict_raster(
        conv_model(),
        scene_with_hole,
        out,
        window=256,
        overlap=64,
        probabilities="uint8",
        metadata=meta,
        progress=False,
    )
    assert report.output == out and report.probabilities == tmp_path / "maps" / "map_probabilities.tif"
    with rasterio.open(scene_with_hole) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.bounds == src.bounds
        profile = dst.profile
        assert profile["tiled"] and profile["blockxsize"] == profile["blockysize"] == 512
        assert profile["compress"] == "deflate"
        assert dst.overviews(1), "a COG carries overviews"
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.dtypes[0] == "uint8" and dst.nodata == 255
        colormap = dst.colormap(1)
        assert [list(colormap[i][:3]) for i in range(3)] == PALETTE
        assert dst.tags()["CLASSES"] == '["water", "field", "forest"]'
        classes = dst.read(1)
        input_valid = src.dataset_mask() > 0
    assert ((classes == 255) == ~input_valid).all()  # nodata exactly where the input was nodata
    assert set(np.unique(classes[input_valid])) <= {0, 1, 2}
    assert len(np.unique(classes[input_valid])) > 1

    with rasterio.open(report.probabilities) as p:
        assert p.count == 3 and p.dtypes[0] == "uint8" and p.nodata == 255
        assert p.descriptions == ("water", "field", "forest")
        assert p.scales[0] == pytest.approx(1 / 254)
        assert p.crs == dst.crs and p.transform == dst.transform
        probs = p.read()
    assert (probs[:, ~input_valid] == 255).all()
    sums = probs[:, input_valid].astype(int).sum(axis=0)
    assert np.abs(sums - 254).max() <= 2  # rounding of three bands
    chosen = np.take_along_axis(probs, classes[None].astype(np.int64) % 3, axis=0)[0]
    # The mapped class has the highest probability, up to one rounding step of the 8-bit encoding.
    assert (chosen[input_valid].astype(int) >= probs.max(axis=0)[input_valid].astype(int) - 1).all()
    assert not list(out.parent.glob(".*")), "no partial or temporary files are left behind"


def test_float16_probabilities_and_model_from_a_run_folder(tmp_path, scene_with_hole, saved_model):
    out = tmp_path / "map.tif"
    report = predict_raster(
        saved_model.parent,
        scene_with_hole,
        out,
        window=512,
        overlap=128,
        probabilities="float16",
        progress=False,
    )
    with rasterio.open(report.probabilities) as p, rasterio.open(out) as dst:
        assert p.tags(1, ns="IMAGE_STRUCTURE")["NBITS"] == "16"  # stored as half floats
        probs = p.read()
        classes = dst.read(1)
        assert [list(dst.colormap(1)[i][:3]) for i in range(3)] == PALETTE  # palette from the file
    valid = classes != 255
    assert np.isnan(probs[:, ~valid]).all()
    np.testing.assert_allclose(probs[:, valid].sum(axis=0), 1.0, atol=3e-3)


class MeanOfBands(nn.Module):
    """A per-pixel regression model returning (B, H, W), like the depth models."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1) * self.scale


def test_regression_writes_values_with_nan_nodata(tmp_path, write_raster, scene):
    image = scene(300, 200)
    image[:, :50, :50] = 0
    path = write_raster(tmp_path / "scene.tif", image, nodata=0)
    out = tmp_path / "values.tif"
    predict_raster(MeanOfBands(), path, out, task="regression", window=128, overlap=32, progress=False)
    with rasterio.open(out) as dst:
        assert dst.dtypes[0] == "float32" and np.isnan(dst.nodata)
        values = dst.read(1)
    expected = image.astype(np.float32).mean(axis=0) / 255 * 2
    hole = (image == 0).all(axis=0)
    assert np.isnan(values[hole]).all()
    np.testing.assert_allclose(values[~hole], expected[~hole], rtol=1e-5)
    with pytest.raises(ValueError, match="probabilities exist only for class maps"):
        predict_raster(
            MeanOfBands(), path, tmp_path / "v2.tif", task="regression", probabilities="uint8", progress=False
        )


def test_classification_models_are_refused(tmp_path, write_raster, scene, pixel_model):
    spec = ModelSpec("classification", "resnet18", num_classes=4)
    path = tmp_path / "cls.safetensors"
    save_model(path, build_model(spec), spec)
    scene_path = write_raster(tmp_path / "s.tif", scene(64, 64))
    with pytest.raises(ValueError, match=r"needs a dense model.*classification"):
        predict_raster(path, scene_path, tmp_path / "m.tif", progress=False)
    with pytest.raises(ValueError, match="would overwrite the input"):
        predict_raster(pixel_model(), scene_path, scene_path, progress=False)


def test_default_window_comes_from_the_model_file(tmp_path, write_raster, scene, pixel_model):
    """A model file may recommend its window (BIT: the training crop); explicit settings still win."""
    path = write_raster(tmp_path / "s.tif", scene(300, 260))
    recommended = WeightsMetadata(classes=("a", "b", "c"), extra={"window": [96, 96]})
    report = predict_raster(pixel_model(), path, tmp_path / "a.tif", metadata=recommended, progress=False)
    assert (report.window, report.overlap) == (96, 24)
    assert "96 px with 24 px overlap" in report.summary()
    plain = WeightsMetadata(classes=("a", "b", "c"))
    report = predict_raster(pixel_model(), path, tmp_path / "b.tif", metadata=plain, progress=False)
    assert (report.window, report.overlap) == (512, 128)
    report = predict_raster(
        pixel_model(), path, tmp_path / "c.tif", metadata=recommended, window=128, overlap=8, progress=False
    )
    assert (report.window, report.overlap) == (128, 8)
