"""The rsvit entry of exported files: round trip, and files written before a field existed."""

from __future__ import annotations

import json

import pytest

from rsvit.export import ExportMetadata
from rsvit.models import ModelSpec
from rsvit.weights import WeightsMetadata


def _meta(**changes) -> ExportMetadata:
    spec = ModelSpec("change", "test_resnet", in_chans=4)
    return ExportMetadata(spec, WeightsMetadata(mean=(0.5,) * 4, std=(0.2,) * 4), window=(64, 64), **changes)


def test_size_multiple_round_trips():
    meta = _meta(size_multiple=32)
    back = ExportMetadata.from_json(meta.to_json())
    assert back == meta and back.size_multiple == 32 and back.inputs == ("image_a", "image_b")


def test_files_without_size_multiple_read_as_unconstrained():
    data = json.loads(_meta(size_multiple=32).to_json())
    del data["size_multiple"]
    assert ExportMetadata.from_json(json.dumps(data)).size_multiple is None


def test_graph_role_round_trips_and_names_its_inputs():
    spec = ModelSpec("promptable", "sam_vit_b")
    meta = ExportMetadata(spec, WeightsMetadata(), window=(64, 64), role="sam-prompt-decoder")
    back = ExportMetadata.from_json(meta.to_json())
    assert back == meta and back.role == "sam-prompt-decoder"
    assert back.inputs[:3] == ("image_embeddings", "point_coords", "point_labels")
    assert back.outputs == ("low_res_masks", "iou_predictions")


def test_files_without_a_role_hold_the_whole_model():
    data = json.loads(_meta().to_json())
    del data["role"]
    assert ExportMetadata.from_json(json.dumps(data)).role == "model"


def test_unknown_role_is_refused():
    with pytest.raises(ValueError, match="unknown graph role"):
        _meta(role="sam-mystery")
