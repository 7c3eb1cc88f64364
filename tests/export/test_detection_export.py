"""Oriented R-CNN export: a torch.export archive that predict-raster runs, and a clear ONNX refusal."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from rsvit.cli.export import add_export_arguments, run_export
from rsvit.export import ExportError, compare_detections, real_inputs
from rsvit.export.api import export_model
from rsvit.export.exported_program import ExportedProgramModel
from rsvit.inference.engine import predict_raster
from rsvit.models import ModelSpec, build_model, load_model, save_model
from rsvit.weights import WeightsMetadata

SPEC = ModelSpec(
    "detection", "test_resnet", num_classes=3, head_kwargs={"fpn_channels": 16, "fc_channels": 32}
)
WINDOW = 128
CLASSES = ("plane", "ship", "harbor")


def export(*argv) -> int:
    return run_export(add_export_arguments(argparse.ArgumentParser()).parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A tiny random-weight detector file and its .pt2 export (through the CLI, checked on a DOTA patch)."""
    folder = tmp_path_factory.mktemp("detector")
    torch.manual_seed(0)
    meta = WeightsMetadata(
        classes=CLASSES,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        input_size=(3, WINDOW, WINDOW),
    )
    source = folder / "det.safetensors"
    save_model(source, build_model(SPEC).eval(), SPEC, meta)
    return source, folder / "det.pt2"


def test_program_carries_metadata_and_matches_eager_on_a_dota_patch(detector, data_dir, capsys):
    source, target = detector
    assert export(source, target, "--format", "exported-program", "--check-data", data_dir) == 0
    assert "detections against" in capsys.readouterr().out
    exported = ExportedProgramModel(target)
    meta = exported.metadata
    assert (
        meta.spec == SPEC and meta.weights.classes == CLASSES and meta.weights.mean == (0.485, 0.456, 0.406)
    )
    assert meta.outputs == ("boxes", "scores", "labels") and meta.role == "model"
    assert not meta.dynamic_batch and not meta.dynamic_spatial and meta.static_reason
    model, _, weights = load_model(source)
    batches = real_inputs(SPEC, weights, data_dir, meta.window, count=2)
    result = compare_detections(model, exported, batches)
    assert result.count > 0 and result.ok, str(result)
    with pytest.raises(ValueError, match="only takes 128x128 windows"):
        exported(torch.zeros(1, 3, 96, 96))


def test_onnx_is_refused_naming_the_operator_and_model(detector, tmp_path, capsys):
    source, _ = detector
    with pytest.raises(ExportError, match=r"detection/test_resnet/oriented_rcnn.*rsvit::batched_nms_rotated"):
        export_model(source, tmp_path / "det.onnx", format="onnx")
    assert export(source, tmp_path / "det.onnx") == 2
    assert "unsupported operator" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_predict_raster_runs_the_program_like_the_model_file(detector, naip_crop, tmp_path):
    source, target = detector
    if not target.exists():
        export_model(source, target, format="exported-program")
    crop = naip_crop
    common = {"window": WINDOW, "bands": "1,2,3", "progress": False}
    eager = predict_raster(source, crop, tmp_path / "eager.geojson", **common)
    program = predict_raster(target, crop, tmp_path / "program.geojson", **common)
    assert program.windows == eager.windows > 1
    want = json.loads((tmp_path / "eager.geojson").read_text())["features"]
    got = json.loads((tmp_path / "program.geojson").read_text())["features"]
    assert len(want) > 0 and len(got) == len(want)
    # the program runs the same kernels, but fused differently: values agree to float rounding
    for a, b in zip(want, got, strict=True):
        assert a["properties"]["class"] == b["properties"]["class"]
        for key in ("score", "cx", "cy", "w", "h", "angle"):
            assert a["properties"][key] == pytest.approx(b["properties"][key], abs=1e-4)
        ring_a, ring_b = (np.asarray(f["geometry"]["coordinates"]) for f in (a, b))
        np.testing.assert_allclose(ring_a, ring_b, atol=1e-6)
