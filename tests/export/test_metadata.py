"""The rsvit entry of exported files: round trip, and files written before a field existed."""

from __future__ import annotations

import json

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
