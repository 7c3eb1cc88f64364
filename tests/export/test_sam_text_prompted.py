"""``segment-raster --text`` on the exported SAM graphs (ONNX Runtime and .pt2) against the PyTorch SAM."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from safetensors.torch import save_file

import export.test_sam_runtime as onnx_runtime_tests  # the fixture SAM and the NAIP crop
import inference.test_text_prompted as text_tests  # the tiny CLIP and the candidate settings
from models.clip.tiny_clip import write_tiny_config  # tests/ is on the path
from rsvit.cli.segment_raster import add_segment_raster_arguments, run_segment_raster
from rsvit.export import export_model
from rsvit.inference.text_prompted import text_segment_raster

sam_model_file = onnx_runtime_tests.sam_model_file  # the fixture SAM's model file
sam_pair_files = onnx_runtime_tests.sam_pair_files  # the fixture SAM's model file and its ONNX pair
naip_crop = onnx_runtime_tests.naip_crop  # a 400 x 300 crop of the real NAIP tile: six SAM windows
MASK_TOLERANCE, SCORE_TOLERANCE = onnx_runtime_tests.MASK_TOLERANCE, onnx_runtime_tests.SCORE_TOLERANCE
clip = text_tests.clip  # the seeded tiny CLIP
SETTINGS = text_tests.SETTINGS  # a 2 x 2 point grid per window, no filters: a dozen candidates per window


@pytest.fixture(scope="module")
def models(sam_pair_files) -> dict:
    """The PyTorch SAM file, its ONNX pair and its .pt2 pair, with the runtime each runs on."""
    source, folder = sam_pair_files
    export_model(source, folder / "sam.pt2", format="exported-program")
    return {
        "torch": (source, None),
        "onnxruntime": (folder / "sam.onnx", "onnxruntime"),
        "pt2": (folder / "sam.pt2", None),
    }


def _run(model, runtime, clip, scene: Path, out: Path, **kwargs) -> tuple[dict, list, np.ndarray]:
    seen: list = []
    summary = text_segment_raster(
        model,
        clip,
        scene,
        "swimming pool",
        out,
        bands=(1, 2, 3),
        negatives=text_tests.NEGATIVES,
        templates=text_tests.TEMPLATES,
        automatic=SETTINGS,
        runtime=runtime,
        progress=False,
        on_regions=lambda regions, scores: seen.append((regions, scores)),
        **kwargs,
    )
    with rasterio.open(out) as dst:
        values = dst.read(1)
    return summary, seen[0], values


@pytest.fixture(scope="module")
def pytorch_run(models, clip, naip_crop, tmp_path_factory) -> tuple:
    """Every candidate of the PyTorch SAM, scored (no threshold): summary, (regions, scores), raster."""
    return _run(*models["torch"], clip, naip_crop, tmp_path_factory.mktemp("torch") / "t.tif", threshold=None)


@pytest.mark.parametrize("exported", ["onnxruntime", "pt2"])
def test_text_regions_on_exported_sam_equal_pytorch(
    models, pytorch_run, exported, clip, naip_crop, tmp_path
) -> None:
    want_summary, (want_regions, want_scores), want = pytorch_run
    got_summary, (got_regions, got_scores), got = _run(
        *models[exported], clip, naip_crop, tmp_path / "exported.tif", threshold=None
    )
    assert want_summary["windows"] == got_summary["windows"] == 6
    assert want_summary["candidates"] == got_summary["candidates"] > 20
    assert len(got_regions) == len(want_regions) == want_summary["matches"] > 5
    np.testing.assert_allclose(
        [r.sam_score for r in got_regions], [r.sam_score for r in want_regions], rtol=0, atol=SCORE_TOLERANCE
    )
    for a, b in zip(want_regions, got_regions, strict=True):
        if a.box == b.box:
            assert (a.mask != b.mask).mean() <= MASK_TOLERANCE * 10, a.box
    assert sum(a.box == b.box for a, b in zip(want_regions, got_regions, strict=True)) >= 0.9 * len(
        want_regions
    )
    np.testing.assert_allclose(got_scores.probability, want_scores.probability, rtol=0, atol=1e-3)
    differ = want != got
    assert differ.mean() <= MASK_TOLERANCE, f"{differ.sum()} of {differ.size} pixels differ"


def test_cli_text_with_runtime_onnxruntime(models, clip, naip_crop, tmp_path, capsys) -> None:
    clip_file = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(clip_file))
    config = write_tiny_config(tmp_path, clip.architecture)
    onnx_pair = str(models["onnxruntime"][0].with_suffix(""))
    argv = ["--model", onnx_pair, "--runtime", "onnxruntime", "--input", str(naip_crop), "--bands", "1,2,3"]
    argv += ["--text", "swimming pool", "--clip-model", str(clip_file), "--clip-config", str(config)]
    argv += ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-thresh", "0", "--quiet"]
    parser = add_segment_raster_arguments(argparse.ArgumentParser())
    assert (
        run_segment_raster(
            parser.parse_args(
                [*argv, "--output", str(tmp_path / "m.tif"), "--top-k", "2", "--threshold", "0"]
            )
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["text"] == "swimming pool" and summary["windows"] == 6 and 0 < summary["matches"] <= 2
    bf16 = ["--encoder-dtype", "bfloat16", "--output", str(tmp_path / "n.tif")]
    assert run_segment_raster(parser.parse_args([*argv, *bf16])) == 2
    assert "exported graphs run in float32" in capsys.readouterr().err
    assert not (tmp_path / "n.tif").exists()
