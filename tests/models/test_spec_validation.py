"""Model files are untrusted: a damaged header, a hostile or malformed description, or one that does not
fit the stored tensors is refused with a typed error naming the file, before anything big is built."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rsvit.errors import ModelSpecError, RsvitError
from rsvit.models import ModelSpec, build_model, load_model, save_model
from rsvit.weights import CheckpointFormatError, read_metadata

SPEC = ModelSpec("segmentation", "resnet18", head="fcn", num_classes=3, head_kwargs={"channels": 8})


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "seg.safetensors"
    torch.manual_seed(0)
    save_model(path, build_model(SPEC).eval(), SPEC)
    return path


def _with_description(src: Path, dst: Path, description: str) -> Path:
    """A copy of ``src`` whose model description is replaced by the raw string ``description``."""
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    metadata["model_spec"] = description
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def _tiny_file(path: Path, description: object) -> Path:
    save_file({"w": torch.zeros(1)}, str(path), metadata={"model_spec": json.dumps(description)})
    return path


def test_truncated_model_file_is_a_format_error_naming_it(model_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    path.write_bytes(model_file.read_bytes()[:-1000])
    with pytest.raises(CheckpointFormatError, match="truncated or corrupted") as info:
        load_model(path)
    assert str(path) in str(info.value) and isinstance(info.value, RsvitError)


def test_invalid_header_json_is_a_format_error_naming_it(tmp_path: Path) -> None:
    header = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'  # closing brace missing
    path = tmp_path / "bad-header.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    for reader in (load_model, read_metadata):
        with pytest.raises(CheckpointFormatError, match="header cannot be read") as info:
            reader(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("num_classes", "expected"),
    [
        (2**34, r"num_classes = 17179869184 is out of range"),
        (200_000, r"num_classes must be at most 100000 and in_chans at most 4096, got 200000, 3"),
    ],
)
def test_huge_class_count_is_refused_before_building(tmp_path: Path, num_classes: int, expected: str) -> None:
    path = _tiny_file(tmp_path / "bomb.safetensors", {**SPEC.to_dict(), "num_classes": num_classes})
    assert path.stat().st_size < 400
    start = time.perf_counter()
    with pytest.raises(ModelSpecError, match=expected) as info:
        load_model(path)
    assert time.perf_counter() - start < 5
    assert str(path) in str(info.value)


def test_class_count_must_match_the_stored_classifier(model_file: Path, tmp_path: Path) -> None:
    path = _with_description(
        model_file, tmp_path / "five.safetensors", json.dumps({**SPEC.to_dict(), "num_classes": 5})
    )
    with pytest.raises(ModelSpecError, match="does not fit the tensors stored in the file") as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and "num_classes=5" in message
    assert "model expects [5, 8, 1, 1], file has [3, 8, 1, 1]" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"backbone_kwargs": {"pretrained": True}},
            r"backbone_kwargs\.pretrained is not allowed in a model file",
        ),
        ({"backbone_kwargs": {"checkpoint_path": "/etc/passwd"}}, "checkpoint_path is not allowed"),
        ({"pretrained": True}, r"unknown model spec entries \['pretrained'\]"),
        ({"num_classes": "3"}, "num_classes must be an integer, got '3'"),
        ({"in_chans": True}, "in_chans must be an integer, got True"),
        ({"task": ["segmentation"]}, "task must be a non-empty string"),
        ({"head": 7}, "head must be a non-empty string or null"),
        ({"head_kwargs": [1, 2]}, "head_kwargs must be a mapping"),
        ({"head_kwargs": {"channels": 2**40}}, r"head_kwargs\.channels = 1099511627776 is out of range"),
        ({"head_kwargs": {"no_such_argument": 1}}, r"cannot be built: TypeError: .*no_such_argument"),
        ({"head_kwargs": {"channels": 16}}, r"does not fit the tensors.*shape mismatches"),
        ({"task": "classification", "head": None}, "does not fit the tensors"),
    ],
)
def test_bad_descriptions_say_what_is_wrong(
    model_file: Path, tmp_path: Path, change: dict, expected: str
) -> None:
    path = _with_description(
        model_file, tmp_path / "edited.safetensors", json.dumps({**SPEC.to_dict(), **change})
    )
    with pytest.raises(ModelSpecError, match=expected) as info:
        load_model(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"task": "segmentation", ', "is not valid JSON"),
        ("[1, 2]", "is a JSON list, expected an object"),
        ('{"task": "segmentation"}', r"lacks the entries \['backbone'\]"),
    ],
)
def test_malformed_description_is_not_reported_as_missing(
    model_file: Path, tmp_path: Path, raw: str, expected: str
) -> None:
    path = _with_description(model_file, tmp_path / "broken.safetensors", raw)
    with pytest.raises(ModelSpecError, match=expected) as info:
        load_model(path)
    assert "carries no model description" not in str(info.value) and str(path) in str(info.value)


def test_valid_file_still_loads_exactly(model_file: Path) -> None:
    model, spec, _ = load_model(model_file)
    assert spec == SPEC
    torch.manual_seed(0)
    reference = build_model(SPEC).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_spec_errors_are_value_errors_and_rsvit_errors() -> None:
    with pytest.raises(ModelSpecError) as info:
        ModelSpec("segmentation", "resnet18", num_classes=3.5)
    assert isinstance(info.value, ValueError) and isinstance(info.value, RsvitError)
    with pytest.raises(ModelSpecError, match="a model spec is a mapping"):
        ModelSpec.from_dict(["segmentation"])
    assert ModelSpec("classification", "resnet18", num_classes=torch.tensor(4).item()).num_classes == 4


def test_unregistered_heads_are_spec_errors() -> None:
    with pytest.raises(ModelSpecError, match="does not fit task 'classification'"):
        ModelSpec("classification", "resnet18", head="upernet")
    with pytest.raises(ModelSpecError, match="unknown task 'no_such_task'"):
        ModelSpec("no_such_task", "resnet18")
