"""``rsvit predict-raster`` with an exported BIT model on a real WHU-CD pair, end to end.

The 1024x1024 pair ``000121`` is written into GeoTIFFs on a made-up UTM grid; the model is the RSP-style
BIT (``bit_rsp``) on timm's tiny ``test_convnext`` backbone so that a CPU run stays quick. The engine
runs four 512 px windows without overlap, so its map must equal the model applied to each quarter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import Affine
from shapely.geometry import shape

from rsvit.cli import main
from rsvit.models import ModelSpec, build_model, load_model, save_model
from rsvit.weights import WeightsMetadata

CRS = "EPSG:32650"
TRANSFORM = Affine(0.3, 0.0, 402000.0, 0.0, -0.3, 3410000.0)  # 0.3 m pixels
SPEC = ModelSpec(task="change", backbone="test_convnext", backbone_kwargs={"out_index": 2})
WINDOW = 512


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).transpose(2, 0, 1).copy()


def _write_geotiff(path: Path, array: np.ndarray) -> Path:
    profile = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": "uint8",
        "crs": CRS,
        "transform": TRANSFORM,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def _normalise(array: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(array).float()[None] / 255 - 0.5) / 0.5


@pytest.fixture(scope="module")
def whu_scene(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """GeoTIFFs of the real pair, an exported model and the change margin it gives per quarter."""
    tiles = data_dir / "whu-cd-tiles"
    before, after = _read_rgb(tiles / "prev" / "000121.png"), _read_rgb(tiles / "curr" / "000121.png")
    assert before.shape == after.shape == (3, 1024, 1024)
    folder = tmp_path_factory.mktemp("whu_raster")
    torch.manual_seed(0)
    model = build_model(SPEC).eval()
    a, b = _normalise(before), _normalise(after)
    margin = torch.empty(1024, 1024)
    with torch.no_grad():
        for y in (0, WINDOW):
            for x in (0, WINDOW):
                tile = (..., slice(y, y + WINDOW), slice(x, x + WINDOW))
                logits = model(a[tile], b[tile])[0]
                margin[y : y + WINDOW, x : x + WINDOW] = logits[1] - logits[0]
        # Shift the change logit so that about half the scene is "change": a map of one class would
        # make the comparison below nearly vacuous.
        median = float(margin.median())
        model.classifier.conv2.bias[1] -= median
    metadata = WeightsMetadata(
        input_size=(3, 256, 256), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), classes=("no change", "change")
    )
    save_model(folder / "model.safetensors", model, SPEC, metadata)
    return {
        "folder": folder,
        "model": folder / "model.safetensors",
        "a": _write_geotiff(folder / "a.tif", before),
        "b": _write_geotiff(folder / "b.tif", after),
        "margin": (margin - median).numpy(),
    }


def test_predict_raster_change_map_on_the_input_grid(whu_scene: dict, capsys: pytest.CaptureFixture) -> None:
    folder = whu_scene["folder"]
    out, vector = folder / "change.tif", folder / "change.geojson"
    code = main(
        [
            "predict-raster",
            "--model",
            str(whu_scene["model"]),
            "--input",
            str(whu_scene["a"]),
            "--input-b",
            str(whu_scene["b"]),
            "--output",
            str(out),
            "--vector",
            str(vector),
            "--vector-crs",
            "raster",  # areas in metres below (the default is EPSG:4326)
            "--simplify",
            "0",
            "--window",
            str(WINDOW),
            "--overlap",
            "0",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    with rasterio.open(whu_scene["a"]) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.crs.to_string() == CRS
        assert dst.transform == src.transform == TRANSFORM
        assert (dst.width, dst.height, dst.count) == (1024, 1024, 1)
        change = dst.read(1)
        bounds = dst.bounds
    assert set(np.unique(change).tolist()) == {0, 1}

    # The same model on each window, run directly: equal except where the two logits tie within rounding.
    margin = whu_scene["margin"]
    expected = (margin > 0).astype(np.uint8)
    decided = np.abs(margin) > 1e-3
    np.testing.assert_array_equal(change[decided], expected[decided])
    assert (change != expected).mean() < 1e-4
    assert 0.3 < change.mean() < 0.7  # the shifted bias splits the scene

    # Polygons: class names from the model file, inside the raster, and exactly the changed pixels' area.
    features = json.loads(vector.read_text())["features"]
    assert features and {f["properties"]["name"] for f in features} <= {"no change", "change"}
    changed = [shape(f["geometry"]) for f in features if f["properties"]["name"] == "change"]
    assert changed and all(f["properties"]["class"] in (0, 1) for f in features)
    for feature in features:
        x0, y0, x1, y1 = shape(feature["geometry"]).bounds
        assert bounds.left - 1e-6 <= x0 <= x1 <= bounds.right + 1e-6
        assert bounds.bottom - 1e-6 <= y0 <= y1 <= bounds.top + 1e-6
    pixel_area = TRANSFORM.a * -TRANSFORM.e
    assert sum(p.area for p in changed) == pytest.approx(int(change.sum()) * pixel_area, rel=1e-6)

    # The exported file itself describes the model the engine ran.
    _, spec, meta = load_model(whu_scene["model"])
    assert spec == SPEC and meta.classes == ("no change", "change")


def test_pair_of_different_sizes_is_refused_with_the_grid_error(
    whu_scene: dict, capsys: pytest.CaptureFixture
) -> None:
    folder = whu_scene["folder"]
    with rasterio.open(whu_scene["b"]) as src:
        cropped = src.read()[:, :1000, :]
    b_small = _write_geotiff(folder / "b_small.tif", cropped)
    out = folder / "refused.tif"
    code = main(
        [
            "predict-raster",
            "--model",
            str(whu_scene["model"]),
            "--input",
            str(whu_scene["a"]),
            "--input-b",
            str(b_small),
            "--output",
            str(out),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "not on the same pixel grid" in err and "size (width x height): 1024 x 1024 vs 1024 x 1000" in err
    assert not out.exists()
