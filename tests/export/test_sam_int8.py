"""``rsvit export SAM OUT.onnx --int8 Q.onnx``: the int8 pair, its report, and its run in segment-raster."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

import export.test_sam_runtime as onnx_runtime_tests  # the fixture SAM, its prompts and the run helper
from rsvit.cli.export import add_export_arguments, run_export
from rsvit.export.onnx import read_onnx_metadata
from rsvit.export.quantize import quantize_sam_int8

sam_model_file = onnx_runtime_tests.sam_model_file  # the fixture SAM's model file
sam_pair_files = onnx_runtime_tests.sam_pair_files  # the fixture SAM's model file (and its ONNX pair)
naip_crop = onnx_runtime_tests.naip_crop  # a 400 x 300 crop of the real NAIP tile

CASES = ("point", "point set", "box", "box with points", "two boxes")


@pytest.fixture(scope="module")
def int8_export(sam_pair_files, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """`rsvit export` with --int8 on the real check crop: the folder and what the command printed."""
    source, _ = sam_pair_files
    folder = tmp_path_factory.mktemp("int8")
    argv = [
        str(source),
        str(folder / "sam.onnx"),
        "--check-data",
        str(data_dir),
        "--int8",
        str(folder / "q.onnx"),
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = run_export(add_export_arguments(argparse.ArgumentParser()).parse_args(argv))
    return status, folder, out.getvalue()


def test_int8_pair_is_written_with_its_metadata_and_reported(int8_export) -> None:
    status, folder, printed = int8_export
    assert status == 0, printed
    for role, name in (("sam-image-encoder", "q.encoder.onnx"), ("sam-prompt-decoder", "q.decoder.onnx")):
        meta, fp32 = read_onnx_metadata(folder / name), read_onnx_metadata(folder / f"sam.{name[2:]}")
        assert (meta.role, meta.quantization, fp32.quantization) == (role, "int8-dynamic", None)
        assert meta.spec == fp32.spec and meta.window == fp32.window
        assert (folder / name).stat().st_size < (folder / f"sam.{name[2:]}").stat().st_size
    lines = [
        line for line in printed.splitlines() if line.startswith("int8 against fp32 on a real NAIP crop")
    ]
    assert [line.split(", ")[1].split(":")[0] for line in lines] == list(CASES)
    for line in lines:
        iou, equal, score = re.search(
            r"mask IoU ([\d.]+), ([\d.]+)% of pixels equal, max score difference (\S+)", line
        ).groups()
        # int8 moves the tiny random model's masks a little, but not to other objects
        assert 0.8 <= float(iou) <= 1.0 and 90.0 <= float(equal) <= 100.0 and 0 <= float(score) < 0.2, line


def test_int8_pair_runs_in_segment_raster(int8_export, naip_crop: Path, tmp_path: Path) -> None:
    _, folder, _ = int8_export
    want, _, want_scores = onnx_runtime_tests._run(folder / "sam.onnx", naip_crop, tmp_path / "fp32.tif")
    got, _, got_scores = onnx_runtime_tests._run(
        folder / "q.onnx", naip_crop, tmp_path / "int8.tif", runtime="onnxruntime"
    )
    assert len(got_scores) == len(want_scores) == 7
    assert len(np.unique(got)) > 3
    assert (want == got).mean() >= 0.9  # measured 98-99 % on the check crop
    assert not np.array_equal(want, got) or not np.allclose(want_scores, got_scores, atol=1e-6), (
        "the int8 graphs gave exactly the fp32 answers: were they quantised?"
    )


def test_existing_int8_targets_are_kept(int8_export, tmp_path: Path) -> None:
    _, folder, _ = int8_export
    before = (folder / "q.encoder.onnx").read_bytes()
    with pytest.raises(FileExistsError, match=r"q\.encoder\.onnx.*--overwrite"):
        quantize_sam_int8(folder / "sam.onnx", folder / "q.onnx")
    assert (folder / "q.encoder.onnx").read_bytes() == before
    written = quantize_sam_int8(folder / "sam.onnx", tmp_path / "again")
    assert sorted(p.name for p in written.values()) == ["again.decoder.onnx", "again.encoder.onnx"]
