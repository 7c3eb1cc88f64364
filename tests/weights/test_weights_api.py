"""Export/import of our safetensors files, atomic writes, file conversion and its command line."""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from torch import nn

import rsvit.weights.api as weights_api
from rsvit.weights import (
    CheckpointFormatError,
    WeightsMetadata,
    WeightsMismatchError,
    add_convert_arguments,
    convert_file,
    load,
    load_into,
    read_checkpoint,
    read_metadata,
    run_convert,
    save,
)

_S2_BANDS = ("B02", "B03", "B04", "B08")


def _metadata() -> WeightsMetadata:
    return WeightsMetadata(
        architecture="resnet18",
        input_size=(4, 256, 256),
        mean=(0.1, 0.2, 0.3, 0.4),
        std=(0.5, 0.5, 0.5, 0.5),
        band_names=_S2_BANDS,
        classes=("background", "building"),
        extra={"license": "CC-BY-4.0", "epochs": 200, "notes": {"seed": 777}},
    )


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = timm.create_model("resnet18", num_classes=2, in_chans=4)
    path = save(tmp_path / "out" / "r18.safetensors", model.state_dict(), _metadata(), family="resnet")
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["r18.safetensors"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # like a plain open(), not private 0600

    metadata = read_metadata(path)
    assert metadata == _metadata()
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata()
    assert json.loads(raw["band_names"]) == list(_S2_BANDS) and raw["format"] == "pt"

    fresh = timm.create_model("resnet18", num_classes=2, in_chans=4)
    result = load_into(fresh, path, strict=True)
    assert result.ok and result.format == "safetensors" and result.family == "resnet"
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], tensor)


def test_saved_files_are_not_converted_again(tmp_path: Path) -> None:
    # A key that a converter would rename or drop survives because the file is marked as ours.
    state_dict = {"layers.0.blocks.0.attn.relative_position_index": torch.zeros(2, dtype=torch.int64)}
    path = save(tmp_path / "ours.safetensors", state_dict, family="swin")
    assert list(load(path).state_dict) == list(state_dict)


def test_shared_and_non_contiguous_tensors_are_saved(tmp_path: Path) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    state_dict = {
        "a": base,
        "tied": base,
        "t": base.t(),
        "row": base[1],
        "broadcast": torch.ones(1).expand(5),
    }
    path = save(tmp_path / "shared.safetensors", state_dict)
    loaded = read_checkpoint(path).state_dict
    for key, tensor in state_dict.items():
        torch.testing.assert_close(loaded[key], tensor)


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(tmp_path / "w.safetensors", {"w": torch.ones(2)})
    before = path.read_bytes()

    def failing_save_file(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(weights_api, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        save(path, {"w": torch.zeros(2)})
    assert path.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary left behind


def test_metadata_validation() -> None:
    with pytest.raises(ValueError, match="mean has 3 values but std has 2"):
        WeightsMetadata(mean=(0, 0, 0), std=(1, 1))
    with pytest.raises(ValueError, match="mean has 3 values for 4 band names"):
        WeightsMetadata(mean=(0, 0, 0), band_names=_S2_BANDS)
    with pytest.raises(ValueError, match="input_size has 3 channels but 4 band names"):
        WeightsMetadata(input_size=(3, 224, 224), band_names=_S2_BANDS)
    with pytest.raises(ValueError, match="std must be positive"):
        WeightsMetadata(std=(0.0,))
    with pytest.raises(ValueError, match="reserved"):
        WeightsMetadata(extra={"classes": ["a"]})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        WeightsMetadata(extra={"bad": object()}).to_safetensors()


def test_read_metadata_of_non_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(CheckpointFormatError, match="not a safetensors file"):
        read_metadata(path)


def test_loading_reports_and_strict_errors(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    path = tmp_path / "other.pth"
    torch.save({"0.weight": torch.ones(5, 4), "0.bias": torch.ones(3), "extra.w": torch.ones(1)}, path)

    result = load(path, model=model)
    assert result.mismatched_keys == [("0.weight", (3, 4), (5, 4))]
    assert result.missing_keys == ["1.weight", "1.bias"]
    assert result.unexpected_keys == ["extra.w"]
    with pytest.raises(WeightsMismatchError) as info:
        load_into(model, path, strict=True)
    assert "0.weight: model expects [3, 4], file has [5, 4]" in str(info.value)
    assert "2 missing, e.g. ['1.weight', '1.bias']" in str(info.value)

    bias_before = model[1].bias.detach().clone()
    load_into(model, path)  # non-strict: only the fitting entry is copied
    torch.testing.assert_close(model[0].bias, torch.ones(3))
    torch.testing.assert_close(model[1].bias, bias_before)

    with pytest.raises(WeightsMismatchError, match=r"no entries under 'backbone\.'.*'0\.', 'extra\.'"):
        load(path, model=model, prefix="backbone.")


def test_whole_model_file_suggests_prefix(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    path = tmp_path / "seg.pth"
    state_dict = {f"backbone.{k}": v for k, v in model.state_dict().items()} | {
        "decode_head.w": torch.ones(1)
    }
    torch.save({"meta": {}, "state_dict": state_dict}, path)
    with pytest.raises(WeightsMismatchError, match=r"pass prefix='backbone\.'"):
        load(path, model=model, strict=True)
    assert load(path, model=model, strict=True, prefix="backbone.").ok


def _rsp_swin_checkpoint(reference_dir: Path, tmp_path: Path) -> Path:
    from safetensors.torch import load_file

    official = load_file(reference_dir / "fixtures" / "rsp_swin_tiny_cfg.safetensors")
    path = tmp_path / "rsp_swin.pth"
    torch.save(
        {"model": official, "epoch": 10, "max_accuracy": 50.0, "config": {"MODEL": {"TYPE": "swin"}}}, path
    )
    return path


def test_convert_file(reference_dir: Path, tmp_path: Path) -> None:
    src = _rsp_swin_checkpoint(reference_dir, tmp_path)
    dst = tmp_path / "swin_ours.safetensors"
    result = convert_file(src, dst, metadata=WeightsMetadata(architecture="swin_tiny_cfg", classes=None))
    assert result.family == "swin" and result.format == "rsp-classification"
    assert "layers.1.downsample.reduction.weight" in result.state_dict  # timm layout

    metadata = read_metadata(dst)
    assert metadata.architecture == "swin_tiny_cfg"
    assert metadata.extra["source_format"] == "rsp-classification"
    assert metadata.extra["source_config"] == {"MODEL": {"TYPE": "swin"}}
    assert "family" not in metadata.extra

    model = timm.create_model(
        "swin_tiny_patch4_window7_224",
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        num_classes=51,
    )
    loaded = load(dst, model=model, strict=True)
    assert loaded.ok and loaded.family == "swin"


def _parse(argv: list[str]) -> argparse.Namespace:
    return add_convert_arguments(argparse.ArgumentParser(prog="rsvit convert")).parse_args(argv)


def test_command_line_helpers(
    reference_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _rsp_swin_checkpoint(reference_dir, tmp_path)
    dst = tmp_path / "cli.safetensors"
    argv = [str(src), str(dst), "--family", "swin", "--input-size", "3,224,224", "--mean", "0.4,0.4,0.4"]
    assert run_convert(_parse([*argv, "--std", "0.2,0.2,0.2", "--classes", "a,b"])) == 0
    assert "wrote" in capsys.readouterr().out
    metadata = read_metadata(dst)
    assert (
        metadata.input_size == (3, 224, 224)
        and metadata.mean == (0.4, 0.4, 0.4)
        and metadata.classes == ("a", "b")
    )

    jpeg = tmp_path / "photo.pth"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    assert run_convert(_parse([str(jpeg), str(tmp_path / "x.safetensors")])) == 1
    assert "a JPEG image" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
    # The family is checked when the command runs (its help must not import the converters).
    assert run_convert(_parse([str(src), str(tmp_path / "y.safetensors"), "--family", "nonsense"])) == 1
    err = capsys.readouterr().err
    assert "unknown --family 'nonsense'" in err and "swin" in err
    assert not (tmp_path / "y.safetensors").exists()


def test_module_entry_point(tmp_path: Path) -> None:
    from rsvit.weights.__main__ import main

    src = tmp_path / "bit.pt"
    torch.save({"model_G_state_dict": {"module.classifier.0.weight": torch.ones(2, 2)}}, src)
    assert main([str(src), str(tmp_path / "bit.safetensors")]) == 0
    converted = read_checkpoint(tmp_path / "bit.safetensors")
    assert list(converted.state_dict) == ["classifier.0.weight"]
    assert read_metadata(tmp_path / "bit.safetensors").extra["source_format"] == "bit"
