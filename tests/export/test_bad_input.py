"""Bad input to export and to the runtime loader: clear errors, nothing half-written."""

from __future__ import annotations

import argparse

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from rsvit.cli.export import add_export_arguments, run_export
from rsvit.export import ExportError, ExportMetadata, MissingMetadataError, OnnxRuntimeModel, export_onnx
from rsvit.models import ModelSpec
from rsvit.weights import WeightsMetadata, save


@torch.library.custom_op("rsvit_export_test::mystery", mutates_args=())
def _mystery(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_mystery.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class _Mystery(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _mystery(x).mean((2, 3))


def export(*argv) -> int:
    return run_export(add_export_arguments(argparse.ArgumentParser()).parse_args([str(a) for a in argv]))


def test_unsupported_operator_names_operator_and_model(tmp_path):
    meta = ExportMetadata(ModelSpec("classification", "mystery_net"), WeightsMetadata(), window=(32, 32))
    with pytest.raises(ExportError, match="classification/mystery_net/linear") as info:
        export_onnx(_Mystery(), meta, tmp_path / "m.onnx")
    assert "rsvit_export_test" in str(info.value) and "mystery" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_existing_output_is_refused_unless_overwrite(tiny_models, tmp_path, capsys):
    out = tmp_path / "cls.onnx"
    out.write_bytes(b"keep me")
    assert export(tiny_models["classification"], out) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert export(tiny_models["classification"], out, "--overwrite") == 0
    assert OnnxRuntimeModel(out).metadata.spec.task == "classification"


def test_bare_weights_cannot_be_exported(tmp_path, capsys):
    source = save(tmp_path / "bare.safetensors", {"w": torch.zeros(2)}, WeightsMetadata())
    assert export(source, tmp_path / "bare.onnx") == 2
    assert "cannot rebuild the model" in capsys.readouterr().err
    assert not (tmp_path / "bare.onnx").exists()


def test_onnx_file_without_rsvit_metadata_is_refused(tmp_path):
    node = helper.make_node("Relu", ["image"], ["logits"])
    graph = helper.make_graph(
        [node],
        "plain",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(MissingMetadataError, match=r"no rsvit metadata.*rsvit export"):
        OnnxRuntimeModel(path)
