"""Oriented R-CNN export: a torch.export archive and an ONNX graph (its rotated NMS run by the runner).

Both run in predict-raster like the model file. Random-weight detectors have many near-tied scores, so
the ONNX checks count reproduced detections rather than demanding equal lists (see DetectionComparison).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from rsvit.cli.export import add_export_arguments, run_export
from rsvit.export import ExportError, compare_detections, real_inputs
from rsvit.export.api import export_model
from rsvit.export.exported_program import ExportedProgramModel
from rsvit.export.onnx import read_onnx_metadata, write_onnx_metadata
from rsvit.export.runtime import OnnxRuntimeModel
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
    assert "eager detections reproduced" in capsys.readouterr().out
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
    assert result.count > 0 and result.matched == result.count == result.other_count, str(result)
    with pytest.raises(ValueError, match="only takes 128x128 windows"):
        exported(torch.zeros(1, 3, 96, 96))


def test_onnx_graph_stops_before_the_rotated_nms_and_reproduces_eager_on_dota_patches(
    detector, data_dir, capsys
):
    source, _ = detector
    target = source.with_name("det.onnx")
    assert export(source, target, "--check-data", data_dir, "--overwrite") == 0
    assert "eager detections reproduced" in capsys.readouterr().out
    runner = OnnxRuntimeModel(target)
    meta = runner.metadata
    assert meta.spec == SPEC and meta.weights.classes == CLASSES and meta.exporter == "dynamo"
    assert meta.outputs == ("boxes", "class_scores") and not meta.dynamic_spatial
    model, _, weights = load_model(source)
    assert meta.selection == {
        "score_thr": model.bbox_head.test_cfg.score_thr,
        "nms_thr": model.bbox_head.test_cfg.nms_thr,
        "max_per_img": model.bbox_head.test_cfg.max_per_img,
        "min_side": model.bbox_head.test_cfg.min_side,
    }
    graph = onnx.load(str(target))
    ops = {node.op_type for node in graph.graph.node}
    assert "NonMaxSuppression" in ops and "TopK" in ops  # the RPN's NMS and stable ranking in the graph
    batches = real_inputs(SPEC, weights, data_dir, meta.window, count=2)
    result = compare_detections(model, runner, batches)
    assert result.count > 100 and result.ok, str(result)
    assert result.box_max_abs <= 1e-3 and result.score_max_abs <= 1e-4
    # the graph's own outputs: one refined box and class probabilities per proposal
    boxes, class_scores = runner.session.run(None, {"image": batches[0][0].numpy()})
    assert boxes.shape[1] == 5 and class_scores.shape == (boxes.shape[0], 3) and boxes.shape[0] > 0
    assert float(class_scores.min()) >= 0 and float(class_scores.sum(1).max()) <= 1 + 1e-5
    with pytest.raises(ValueError, match="only takes 128x128 windows"):
        runner(torch.zeros(1, 3, 96, 96))


def test_onnx_refuses_a_custom_operator_without_translation_naming_it(detector, tmp_path, monkeypatch):
    """The whole detector holds rsvit's rotated NMS: exporting it as the ONNX graph must be refused."""
    import rsvit.export.detection as detection

    source, _ = detector
    monkeypatch.setattr(detection, "DetectionCandidatesGraph", detection.DetectionGraph)
    with pytest.raises(
        ExportError, match=r"detection/test_resnet/oriented_rcnn.*rsvit::batched_nms_rotated"
    ) as err:
        export_model(source, tmp_path / "det.onnx", format="onnx")
    assert "torchvision::nms" not in str(err.value)  # translated to NonMaxSuppression, not refused
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def onnx_detector(detector) -> Path:
    source, _ = detector
    target = source.with_name("plain.onnx")
    export_model(source, target, format="onnx")
    return target


def test_selection_without_settings_is_refused(onnx_detector, tmp_path):
    target = tmp_path / "det.onnx"
    shutil.copy(onnx_detector, target)
    proto = onnx.load(str(target))
    write_onnx_metadata(proto, read_onnx_metadata(target).with_changes(selection=None))
    onnx.save(proto, str(target))
    with pytest.raises(ValueError, match="without selection settings"):
        OnnxRuntimeModel(target)(torch.zeros(1, 3, WINDOW, WINDOW))


def test_int8_detector_is_compared_with_fp32(detector, data_dir, tmp_path, capsys):
    source, _ = detector
    target, int8 = tmp_path / "det.onnx", tmp_path / "det.int8.onnx"
    assert export(source, target, "--check-data", data_dir, "--int8", int8) == 0
    out = capsys.readouterr().out
    assert f"int8 model {int8} against fp32:" in out
    assert read_onnx_metadata(int8).quantization == "int8-dynamic"
    assert read_onnx_metadata(int8).selection == read_onnx_metadata(target).selection
    assert len(OnnxRuntimeModel(int8)(torch.zeros(1, 3, WINDOW, WINDOW))) == 1


def _boxes(model, crop, out) -> tuple[int, list[dict]]:
    """predict-raster's windows and GeoJSON features for ``model`` on ``crop``."""
    run = predict_raster(model, crop, out, window=WINDOW, bands="1,2,3", progress=False)
    return run.windows, json.loads(out.read_text())["features"]


@pytest.fixture(scope="module")
def eager_boxes(detector, naip_crop, tmp_path_factory) -> tuple[int, list[dict]]:
    source, _ = detector
    return _boxes(source, naip_crop, tmp_path_factory.mktemp("eager") / "eager.geojson")


def test_predict_raster_runs_the_program_like_the_model_file(detector, eager_boxes, naip_crop, tmp_path):
    source, target = detector
    if not target.exists():
        export_model(source, target, format="exported-program")
    windows, want = eager_boxes
    program_windows, got = _boxes(target, naip_crop, tmp_path / "program.geojson")
    assert program_windows == windows > 1
    assert len(want) > 0 and len(got) == len(want)
    # the program runs the same kernels, but fused differently: values agree to float rounding
    for a, b in zip(want, got, strict=True):
        assert a["properties"]["class"] == b["properties"]["class"]
        for key in ("score", "cx", "cy", "w", "h", "angle"):
            assert a["properties"][key] == pytest.approx(b["properties"][key], abs=1e-4)
        ring_a, ring_b = (np.asarray(f["geometry"]["coordinates"]) for f in (a, b))
        np.testing.assert_allclose(ring_a, ring_b, atol=1e-6)


def _reproduced(want: list[dict], got: list[dict], tolerance: float = 1e-3) -> int:
    """Features of ``want`` with a twin in ``got``: same class, every box property within ``tolerance``."""
    keys = ("score", "cx", "cy", "w", "h", "angle")
    free = list(got)
    found = 0
    for a in want:
        for b in free:
            same = a["properties"]["class"] == b["properties"]["class"]
            if same and all(abs(a["properties"][k] - b["properties"][k]) <= tolerance for k in keys):
                free.remove(b)
                found += 1
                break
    return found


def test_predict_raster_runs_the_onnx_graph_like_the_model_file(
    eager_boxes, onnx_detector, naip_crop, tmp_path
):
    windows, want = eager_boxes
    graph_windows, got = _boxes(onnx_detector, naip_crop, tmp_path / "onnx.geojson")
    assert graph_windows == windows > 1
    assert len(want) > 20
    assert _reproduced(want, got) >= 0.99 * max(len(want), len(got))
