"""The ``.pt2`` SAM graphs (torch.export) in the raster commands against the PyTorch model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import export.test_sam_runtime as onnx_runtime_tests  # the fixture SAM, its prompts and the run helper
from rsvit.export import MissingMetadataError, export_model
from rsvit.export.exported_program import load_program
from rsvit.export.metadata import METADATA_KEY
from rsvit.export.sam_runtime import ProgramSam, load_program_sam, sam_pair
from rsvit.inference.promptable import load_promptable_model, segment_raster

sam_model_file = onnx_runtime_tests.sam_model_file  # the fixture SAM's model file
naip_crop = onnx_runtime_tests.naip_crop  # a 400 x 300 crop of the real NAIP tile
collection, point = onnx_runtime_tests.collection, onnx_runtime_tests.point


@pytest.fixture(scope="module")
def program_pair(sam_model_file):
    """The fixture SAM's model file and the folder holding its two ``.pt2`` graphs."""
    source, folder = sam_model_file
    export_model(source, folder / "sam.pt2", format="exported-program")
    return source, folder


@pytest.mark.parametrize("name", ["sam.encoder.pt2", "sam.decoder.pt2", "sam.pt2", "sam"])
def test_either_file_or_the_stem_names_the_pair(program_pair, name: str) -> None:
    _, folder = program_pair
    assert sam_pair(folder / name, "exported-program") == {
        "sam-image-encoder": folder / "sam.encoder.pt2",
        "sam-prompt-decoder": folder / "sam.decoder.pt2",
    }
    # a .pt2 suffix picks PyTorch; the bare stem needs no runtime either when its .pt2 pair exists
    assert isinstance(load_promptable_model(folder / name), ProgramSam)


def test_segment_raster_on_the_programs_matches_pytorch(
    program_pair, naip_crop: Path, tmp_path: Path
) -> None:
    source, folder = program_pair
    onnx_runtime_tests.assert_segments_match(source, folder / "sam.decoder.pt2", naip_crop, tmp_path)


def test_masks_raster_cli_on_the_programs_matches_pytorch(
    program_pair, naip_crop: Path, tmp_path: Path, capsys
) -> None:
    source, folder = program_pair
    onnx_runtime_tests.assert_masks_raster_cli_matches(
        source, folder / "sam.pt2", naip_crop, tmp_path, capsys
    )


def _resave(source: Path, target: Path, metadata_json: str | None) -> Path:
    program, _ = load_program(source)
    extra = {} if metadata_json is None else {f"{METADATA_KEY}.json": metadata_json}
    torch.export.save(program, target, extra_files=extra)
    return target


def test_wrong_role_missing_partner_and_bare_files_are_refused(program_pair, tmp_path: Path) -> None:
    _, folder = program_pair
    encoder, decoder = folder / "sam.encoder.pt2", folder / "sam.decoder.pt2"
    with pytest.raises(ValueError, match=r"role 'sam-prompt-decoder'.*not the sam-image-encoder graph"):
        ProgramSam(decoder, decoder)
    with pytest.raises(ValueError, match=r"role 'sam-image-encoder'.*OUT\.encoder\.pt2"):
        ProgramSam(encoder, encoder)
    meta = load_program(encoder)[1]
    whole = _resave(encoder, tmp_path / "whole.pt2", meta.with_changes(role="model").to_json())
    with pytest.raises(ValueError, match="holds a whole model"):
        load_promptable_model(whole)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "sam.encoder.pt2").write_bytes(encoder.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"sam\.decoder\.pt2 not found.*two files"):
        load_program_sam(lonely / "sam.encoder.pt2")
    _resave(decoder, tmp_path / "bare.decoder.pt2", None)
    (tmp_path / "bare.encoder.pt2").write_bytes(encoder.read_bytes())
    with pytest.raises(MissingMetadataError, match="no rsvit metadata"):
        load_promptable_model(tmp_path / "bare.pt2")
    (tmp_path / "other.encoder.onnx").write_bytes(b"")  # a stem naming an ONNX pair only
    with pytest.raises(FileNotFoundError, match=r"other\.encoder\.onnx exists: add --runtime onnxruntime"):
        load_promptable_model(tmp_path / "other")


def test_cli_refusals_for_programs(program_pair, naip_crop: Path, tmp_path: Path, capsys) -> None:
    _, folder = program_pair
    cli = onnx_runtime_tests.segment_cli(naip_crop, tmp_path)
    pt2 = str(folder / "sam.encoder.pt2")
    assert cli("--model", pt2, "--runtime", "onnxruntime", "--output", str(tmp_path / "a.tif")) == 2
    assert "runs in PyTorch" in capsys.readouterr().err
    assert cli("--model", pt2, "--encoder-dtype", "bfloat16", "--output", str(tmp_path / "b.tif")) == 2
    assert "exported graphs run in float32" in capsys.readouterr().err
    assert cli("--model", str(tmp_path / "nothing"), "--output", str(tmp_path / "c.tif")) == 2
    assert "model file not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="use device cpu"):
        segment_raster(
            pt2, naip_crop, collection(point(naip_crop, 50, 60, "a")), tmp_path / "d.tif", device="meta"
        )
    assert not any((tmp_path / f"{n}.tif").exists() for n in "abcd")
