"""ONNX export of every task's model through `rsvit export`, checked against eager PyTorch on real images."""

from __future__ import annotations

import argparse

import onnx
import pytest
import torch

from rsvit.cli.export import add_export_arguments, run_export
from rsvit.export import (
    OnnxRuntimeModel,
    argmax_agreement,
    compare_models,
    quantize_int8,
    read_onnx_metadata,
    real_inputs,
)
from rsvit.models import load_model


def export(*argv: str) -> int:
    return run_export(add_export_arguments(argparse.ArgumentParser()).parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def onnx_files(tiny_models, data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    files = {}
    for task, source in tiny_models.items():
        out = folder / f"{task}.onnx"
        assert export(source, out, "--format", "onnx", "--check-data", data_dir) == 0
        files[task] = out
    return files


@pytest.mark.parametrize("task", ["classification", "segmentation", "change", "regression"])
def test_onnx_matches_eager_on_real_images(task, tiny_models, onnx_files, data_dir):
    model, spec, weights = load_model(tiny_models[task])
    runtime = OnnxRuntimeModel(onnx_files[task], threads=1)
    meta = runtime.metadata
    assert meta.spec == spec and meta.weights == weights and meta.exporter == "dynamo"
    assert meta.window == (64, 96)
    batches = real_inputs(spec, weights, data_dir, meta.window)
    # a batch of two tells a dynamic batch dimension from one fixed at the traced size
    batches.append(tuple(torch.cat(parts) for parts in zip(*batches, strict=True)))
    result = compare_models(model, runtime, batches)
    assert result.span > 0
    assert result.relative <= 1e-4, str(result)


@pytest.mark.parametrize("task", ["classification", "change", "regression"])
def test_dynamic_spatial_size_holds_at_another_size(task, tiny_models, onnx_files, data_dir):
    model, spec, weights = load_model(tiny_models[task])
    runtime = OnnxRuntimeModel(onnx_files[task], threads=1)
    assert runtime.metadata.dynamic_spatial
    result = compare_models(model, runtime, real_inputs(spec, weights, data_dir, (96, 128), count=1))
    assert result.relative <= 1e-4, str(result)


def test_pyramid_pooling_fixes_the_spatial_size_and_says_why(onnx_files):
    runtime = OnnxRuntimeModel(onnx_files["segmentation"], threads=1)
    assert not runtime.metadata.dynamic_spatial
    assert "PyramidPooling" in runtime.metadata.static_reason
    with pytest.raises(ValueError, match="only takes 64x96 windows"):
        runtime(torch.zeros(1, 3, 96, 128))


def test_int8_keeps_the_metadata_and_most_classes(tiny_models, onnx_files, data_dir, tmp_path):
    out = quantize_int8(onnx_files["classification"], tmp_path / "cls.int8.onnx")
    graph = onnx.load(str(out)).graph
    assert any(node.op_type in {"MatMulInteger", "DynamicQuantizeLinear"} for node in graph.node)
    fp32, int8 = OnnxRuntimeModel(onnx_files["classification"]), OnnxRuntimeModel(out)
    assert int8.metadata.quantization == "int8-dynamic" and int8.metadata.spec == fp32.metadata.spec
    batches = real_inputs(fp32.spec, fp32.metadata.weights, data_dir, (64, 96), count=7)
    ref = torch.cat([fp32(*b) for b in batches])
    got = torch.cat([int8(*b) for b in batches])
    assert not torch.equal(ref, got)  # the weights really were quantised
    assert argmax_agreement(ref, got) >= 5 / 7


def test_command_writes_int8_and_reports_agreement(tiny_models, data_dir, tmp_path, capsys):
    out, int8 = tmp_path / "seg.onnx", tmp_path / "seg.int8.onnx"
    status = export(tiny_models["segmentation"], out, "--check-data", data_dir, "--int8", int8)
    assert status == 0 and int8.is_file()
    text = capsys.readouterr().out
    assert "max |diff|" in text and "argmax agrees with fp32 on" in text
    assert read_onnx_metadata(int8).quantization == "int8-dynamic"
