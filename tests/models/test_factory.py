"""Whole models from specs, and the save/load round trip that lets files rebuild their network."""

from __future__ import annotations

import pytest
import torch

from rsvit.models.spec import ModelSpec, build_model, load_model, save_model
from rsvit.weights import WeightsMetadata, save


@pytest.mark.parametrize(
    ("spec", "out_shape"),
    [
        (ModelSpec("segmentation", "resnet18", num_classes=4, head_kwargs={"channels": 32}), (1, 4, 64, 96)),
        (
            ModelSpec("segmentation", "resnet18", head="dpt", num_classes=3, head_kwargs={"features": 32}),
            (1, 3, 64, 96),
        ),
        (ModelSpec("segmentation", "resnet18", head="fcn", num_classes=5), (1, 5, 64, 96)),
        (ModelSpec("classification", "resnet18", num_classes=7, in_chans=4), (1, 7)),
        (ModelSpec("regression", "resnet18", head_kwargs={"features": 32}), (1, 64, 96)),
    ],
)
def test_specs_build_working_models(spec, out_shape):
    model = build_model(spec.to_dict()).eval()
    with torch.no_grad():
        out = model(torch.randn(1, spec.in_chans, 64, 96))
    assert tuple(out.shape) == out_shape


def test_change_spec_takes_two_dates():
    model = build_model(ModelSpec("change", "bit_resnet18")).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_save_and_load_round_trip(tmp_path):
    spec = ModelSpec("segmentation", "resnet18", num_classes=3, in_chans=4, head_kwargs={"channels": 16})
    model = build_model(spec).eval()
    meta = WeightsMetadata(classes=("water", "land", "road"), mean=(0.1,) * 4, std=(0.2,) * 4)
    path = tmp_path / "seg.safetensors"
    save_model(path, model, spec, meta)
    loaded, spec2, meta2 = load_model(path)
    assert spec2 == spec and meta2.classes == meta.classes
    assert meta2.architecture == "segmentation/resnet18/upernet"
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_bare_weights_cannot_rebuild_a_model(tmp_path):
    path = save(tmp_path / "bare.safetensors", {"w": torch.zeros(2)}, WeightsMetadata())
    with pytest.raises(ValueError, match="no model description"):
        load_model(path)


def test_bad_specs():
    with pytest.raises(ValueError, match="unknown task"):
        ModelSpec("no_such_task", "resnet50")
    with pytest.raises(ValueError, match="does not fit task 'classification'"):
        ModelSpec("classification", "resnet50", head="upernet")
    with pytest.raises(ValueError, match="unknown model spec entries"):
        ModelSpec.from_dict({"task": "segmentation", "backbone": "resnet50", "colour": "red"})
