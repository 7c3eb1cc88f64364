"""``predict_raster`` on ONNX Runtime: an exported file alone, the same outputs as the PyTorch path.

Tiny models are exported once per module and run on a crop of the real NAIP scene (4 bands, UTM).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import rasterio
from rasterio.windows import Window

from raster_crops import write_crop
from rsvit.export import MissingMetadataError, export_model
from rsvit.inference.cli import main as predict_raster_main
from rsvit.inference.engine import predict_raster
from rsvit.models import ModelSpec, build_model, save_model
from rsvit.weights import WeightsMetadata

SPECS = {
    # UperNet's pyramid pooling fixes the spatial size of the graph: the export forces the window
    "segmentation": ModelSpec(
        "segmentation", "test_resnet", in_chans=4, num_classes=4, head_kwargs={"channels": 16}
    ),
    "change": ModelSpec("change", "test_resnet", in_chans=4, backbone_kwargs={"out_index": 3}),
    "regression": ModelSpec(
        "regression",
        "test_resnet",
        in_chans=4,
        head_kwargs={"features": 16, "head_kwargs": {"non_negative": False}},
    ),
}
WINDOW = 64


@pytest.fixture(scope="module")
def naip_crop(data_dir, tmp_path_factory):
    """A 150 x 180 crop of the NAIP scene, georeferenced like the original."""
    source = data_dir / "geotiff" / "naip" / "m_4709963_se_14_1_20200831.tif"
    path = tmp_path_factory.mktemp("naip") / "crop.tif"
    return write_crop(source, path, Window(300, 200, 180, 150), nodata=0, compress="deflate")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Per task: ``(.safetensors, .onnx)`` of one tiny model with random weights."""
    import torch

    folder = tmp_path_factory.mktemp("ort_models")
    files = {}
    for task, spec in SPECS.items():
        torch.manual_seed(1)
        model = build_model(spec).eval()
        classes = None if task == "regression" else tuple(f"class{i}" for i in range(spec.num_classes))
        meta = WeightsMetadata(
            classes=classes,
            mean=(0.45, 0.4, 0.35, 0.5),
            std=(0.2, 0.2, 0.2, 0.25),
            input_size=(4, WINDOW, WINDOW),
            extra={"palette": [[i * 60, 20, 200 - i * 40] for i in range(spec.num_classes)]}
            if classes
            else {},
        )
        source = folder / f"{task}.safetensors"
        save_model(source, model, spec, meta)
        target = folder / f"{task}.onnx"
        export_model(source, target, format="onnx")
        files[task] = (source, target)
    return files


@pytest.fixture(scope="module")
def naip_crop_b(naip_crop, data_dir):
    """Another part of the scene written on the crop's grid: a second date for change models."""
    source = data_dir / "geotiff" / "naip" / "m_4709963_se_14_1_20200831.tif"
    path = naip_crop.with_name("crop_b.tif")
    with rasterio.open(naip_crop) as crop, rasterio.open(source) as src:
        profile = crop.profile
        data = src.read(window=Window(500, 420, 180, 150))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.tags()


def test_segmentation_outputs_match_pytorch(models, naip_crop, tmp_path):
    source, exported = models["segmentation"]
    common = {"overlap": 16, "batch_size": 3, "probabilities": "float16", "progress": False}
    eager = predict_raster(
        source, naip_crop, tmp_path / "eager.tif", window=WINDOW, vector=tmp_path / "eager.geojson", **common
    )
    # no window and no runtime given: the .onnx suffix picks ONNX Runtime, the fixed export the window
    ort = predict_raster(exported, naip_crop, tmp_path / "ort.tif", vector=tmp_path / "ort.geojson", **common)
    assert ort.window == eager.window == WINDOW and ort.windows == eager.windows > 4
    eager_map, eager_profile, _ = _read(tmp_path / "eager.tif")
    ort_map, ort_profile, _ = _read(tmp_path / "ort.tif")
    assert len(np.unique(eager_map)) > 1
    np.testing.assert_array_equal(ort_map, eager_map)
    for key in ("crs", "transform", "width", "height", "dtype", "nodata"):
        assert ort_profile[key] == eager_profile[key]
    eager_p = _read(tmp_path / "eager_probabilities.tif")[0].astype(np.float32)
    ort_p = _read(tmp_path / "ort_probabilities.tif")[0].astype(np.float32)
    assert np.abs(ort_p - eager_p).max() <= 1e-3  # float16 storage: one step near 1 is 4.9e-4
    eager_geo = json.loads((tmp_path / "eager.geojson").read_text())
    ort_geo = json.loads((tmp_path / "ort.geojson").read_text())
    assert ort_geo == eager_geo and len(eager_geo["features"]) > 0
    assert (tmp_path / "ort.tif.aux.xml").read_text() == (tmp_path / "eager.tif.aux.xml").read_text()


def test_regression_values_match_pytorch(models, naip_crop, tmp_path):
    source, exported = models["regression"]
    common = {"window": 96, "overlap": 24, "batch_size": 2, "progress": False}
    predict_raster(source, naip_crop, tmp_path / "eager.tif", **common)
    # a dynamic-size export takes the window asked for
    report = predict_raster(exported, naip_crop, tmp_path / "ort.tif", runtime="onnxruntime", **common)
    assert report.window == 96
    eager = _read(tmp_path / "eager.tif")[0].astype(np.float64)
    ort = _read(tmp_path / "ort.tif")[0].astype(np.float64)
    span = eager.max() - eager.min()
    assert span > 0
    assert np.abs(ort - eager).max() <= 1e-4 * span


def test_cli_runs_onnx_and_refuses_conflicts(models, naip_crop, tmp_path, capsys):
    _, exported = models["segmentation"]
    base = ["--model", str(exported), "--input", str(naip_crop), "--quiet"]
    assert predict_raster_main([*base, "--output", str(tmp_path / "a.tif"), "--runtime", "onnxruntime"]) == 0
    with rasterio.open(tmp_path / "a.tif") as src:
        assert src.shape == (150, 180)
    assert predict_raster_main([*base, "--output", str(tmp_path / "b.tif"), "--window", "96"]) == 1
    err = capsys.readouterr().err
    assert "64x64 windows only" in err and "--window 96" in err
    assert predict_raster_main([*base, "--output", str(tmp_path / "c.tif"), "--bf16"]) == 1
    assert "bf16" in capsys.readouterr().err
    assert predict_raster_main([*base, "--output", str(tmp_path / "d.tif"), "--runtime", "torch"]) == 1
    assert "is an ONNX file: run it with the onnxruntime runtime" in capsys.readouterr().err
    assert not any(p.name.startswith(("b.", "c.", "d.")) for p in tmp_path.iterdir())


def test_file_without_metadata_is_refused(models, naip_crop, tmp_path, capsys):
    _, exported = models["regression"]
    proto = onnx.load(str(exported))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(MissingMetadataError, match="no rsvit metadata"):
        predict_raster(bare, naip_crop, tmp_path / "x.tif", progress=False)
    argv = ["--model", str(bare), "--input", str(naip_crop), "--output", str(tmp_path / "y.tif")]
    assert predict_raster_main(argv) == 1
    assert "rsvit export" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists() and not (tmp_path / "y.tif").exists()


def test_raster_smaller_than_a_fixed_window_is_refused(models, naip_crop, tmp_path):
    _, exported = models["segmentation"]
    small = tmp_path / "small.tif"
    with rasterio.open(naip_crop) as src:
        profile = src.profile | {"width": 40, "height": 40}
        data = src.read(window=Window(0, 0, 40, 40))
    with rasterio.open(small, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(ValueError, match="raster is smaller"):
        predict_raster(exported, small, tmp_path / "out.tif", progress=False)
    assert not (tmp_path / "out.tif").exists()


def test_change_maps_match_pytorch(models, naip_crop, naip_crop_b, tmp_path):
    source, exported = models["change"]
    common = {
        "input_b": naip_crop_b,
        "window": 96,
        "overlap": 24,
        "probabilities": "float16",
        "progress": False,
    }
    predict_raster(source, naip_crop, tmp_path / "eager.tif", **common)
    report = predict_raster(exported, naip_crop, tmp_path / "ort.tif", **common)
    assert report.windows > 1
    eager_map, ort_map = _read(tmp_path / "eager.tif")[0], _read(tmp_path / "ort.tif")[0]
    assert len(np.unique(eager_map)) > 1
    np.testing.assert_array_equal(ort_map, eager_map)
    eager_p = _read(tmp_path / "eager_probabilities.tif")[0].astype(np.float32)
    ort_p = _read(tmp_path / "ort_probabilities.tif")[0].astype(np.float32)
    assert np.abs(ort_p - eager_p).max() <= 1e-3


def test_window_the_graph_does_not_hold_at_is_refused(models, naip_crop, naip_crop_b, tmp_path):
    # the change graph's size arithmetic holds at multiples of the stride only (found at export time)
    _, exported = models["change"]
    with pytest.raises(ValueError, match="multiples of 32"):
        predict_raster(
            exported, naip_crop, tmp_path / "out.tif", input_b=naip_crop_b, window=80, progress=False
        )
    assert not (tmp_path / "out.tif").exists()
