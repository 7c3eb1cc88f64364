"""An ONNX Runtime run of ``predict_raster`` that crashes, resumed with ``resume=True``: the same bytes.

The probabilities here are half floats in one partial 512-pixel tile (180 x 150). GDAL's COG driver
leaves the part of such a tile beyond the raster edge uninitialised in all bands but the last, so the
file bytes used to depend on what the process had allocated before (tests run earlier in the same
process, e.g. the SAM ones); :func:`rsvit.inference.writer.clear_edge_padding` makes them depend on the
pixels only, and ``tests/inference/test_writer_determinism.py`` checks that part on its own.
"""

from __future__ import annotations

import json

import pytest
import rasterio
import torch

import inference.test_inference_onnxruntime as onnxruntime_raster  # the NAIP crop and the tiny specs
from rsvit.export import export_model
from rsvit.export.runtime import OnnxRuntimeModel
from rsvit.inference.engine import predict_raster
from rsvit.models import build_model, save_model
from rsvit.weights import WeightsMetadata

naip_crop = onnxruntime_raster.naip_crop  # the fixture: a 180 x 150 crop of the real NAIP scene (4 bands)
WINDOW = onnxruntime_raster.WINDOW
SETTINGS = {"overlap": 16, "batch_size": 1, "probabilities": "float16", "progress": False}


class CrashError(RuntimeError):
    pass


@pytest.fixture(scope="module")
def segmentation_onnx(tmp_path_factory):
    """A tiny segmentation model (random weights) exported to ONNX at a fixed window."""
    spec = onnxruntime_raster.SPECS["segmentation"]
    torch.manual_seed(1)
    meta = WeightsMetadata(
        classes=tuple(f"class{i}" for i in range(spec.num_classes)),
        mean=(0.45, 0.4, 0.35, 0.5),
        std=(0.2, 0.2, 0.2, 0.25),
        input_size=(4, WINDOW, WINDOW),
    )
    folder = tmp_path_factory.mktemp("ort_resume")
    save_model(folder / "seg.safetensors", build_model(spec).eval(), spec, meta)
    export_model(folder / "seg.safetensors", folder / "seg.onnx", format="onnx")
    return folder / "seg.onnx"


def _crash_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """Every ONNX Runtime model raises on call number ``calls + 1``, as a run killed mid-strip."""
    run = OnnxRuntimeModel.__call__
    count = {"n": 0}

    def counted(self, *inputs):
        count["n"] += 1
        if count["n"] > calls:
            raise CrashError("simulated crash")
        return run(self, *inputs)

    monkeypatch.setattr(OnnxRuntimeModel, "__call__", counted)


def test_resumed_onnxruntime_run_writes_the_same_bytes(segmentation_onnx, naip_crop, tmp_path, monkeypatch):
    (tmp_path / "full").mkdir()
    full = predict_raster(segmentation_onnx, naip_crop, tmp_path / "full" / "map.tif", **SETTINGS)
    assert full.window == WINDOW and full.strips >= 3
    per_strip = full.windows // full.strips

    out = tmp_path / "out" / "map.tif"
    with monkeypatch.context() as patch:
        _crash_after(patch, calls=2 * per_strip + 1)  # strips 0-1 written, then a crash in strip 2
        with pytest.raises(CrashError):
            predict_raster(segmentation_onnx, naip_crop, out, runtime="onnxruntime", **SETTINGS)
    assert not out.exists()
    state = json.loads((out.parent / ".map.tif.partial.json").read_text())
    assert 1 < state["strips_done"] < state["n_strips"] == full.strips

    resumed = predict_raster(
        segmentation_onnx, naip_crop, out, runtime="onnxruntime", resume=True, **SETTINGS
    )
    assert resumed.resumed_from == state["strips_done"]
    assert resumed.windows < full.windows  # the strips before the one above the crash are kept
    got = {path.name: path.read_bytes() for path in out.parent.iterdir()}
    want = {path.name: path.read_bytes() for path in (tmp_path / "full").iterdir()}
    assert sorted(got) == sorted(want) == ["map.tif", "map.tif.aux.xml", "map_probabilities.tif"]
    for name, data in want.items():
        assert got[name] == data, f"{name} differs from the uninterrupted run's"
    with rasterio.open(out.parent / "map_probabilities.tif") as src:
        assert src.tags(1, ns="IMAGE_STRUCTURE")["NBITS"] == "16"  # the half-float case that used to differ
        assert (src.width, src.height, src.block_shapes[0]) == (180, 150, (512, 512))
