"""The exported SAM graphs in the raster commands (``--runtime onnxruntime``) against the PyTorch model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio
from safetensors.torch import load_file

import inference.test_promptable_raster as promptable_raster  # the NAIP crop and prompt builders
from models.promptable.conftest import tiny_config  # the fixture model's config (tests/ is on the path)
from rsvit.cli.segment_raster import (
    add_masks_raster_arguments,
    add_segment_raster_arguments,
    run_masks_raster,
    run_segment_raster,
)
from rsvit.export import MissingMetadataError, export_model
from rsvit.export.onnx import read_onnx_metadata, write_onnx_metadata
from rsvit.export.sam_runtime import OnnxSam, load_onnx_sam, sam_pair
from rsvit.inference.automatic import masks_raster
from rsvit.inference.promptable import load_promptable_model, segment_raster
from rsvit.models import ModelSpec, build_model, save_model
from rsvit.models.promptable import convert_official_sam_state_dict
from rsvit.weights import WeightsMetadata

naip_crop = promptable_raster.naip_crop  # the fixture: a 400 x 300 crop of the real NAIP tile
box, collection, point = promptable_raster.box, promptable_raster.collection, promptable_raster.point

# Thresholded masks of the two runtimes differ only where a logit lies within the graphs' float error
# (~1e-5) of the threshold: at most this fraction of the raster's pixels, all on mask boundaries.
MASK_TOLERANCE = 1e-3
SCORE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def sam_model_file(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny official SAM (fixture weights) as an rsvit model file, and the folder it lies in."""
    fixtures = reference_dir / "fixtures"
    config = tiny_config(json.loads((fixtures / "sam_tiny_config.json").read_text())).to_dict()
    spec = ModelSpec("promptable", "sam_vit_b", head_kwargs=config)
    model = build_model(spec)
    model.load_state_dict(convert_official_sam_state_dict(load_file(fixtures / "sam_tiny.safetensors")))
    folder = tmp_path_factory.mktemp("sam")
    source = folder / "sam.safetensors"
    save_model(
        source, model.eval(), spec, WeightsMetadata(mean=config["pixel_mean"], std=config["pixel_std"])
    )
    return source, folder


@pytest.fixture(scope="module")
def sam_pair_files(sam_model_file):
    """The tiny official SAM (fixture weights): its rsvit model file and its two exported ONNX graphs."""
    source, folder = sam_model_file
    export_model(source, folder / "sam.onnx", format="onnx")
    return source, folder


def _prompts(raster: Path) -> dict:
    """Single points (decoded as one batch), a box, two point prompts far away and a polygon as a mask."""
    scribble = {
        "type": "Feature",
        "properties": {"prompt_id": "field"},
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [
                    point(raster, x, y, "")["geometry"]["coordinates"]
                    for x, y in ((330, 40), (390, 40), (390, 90), (330, 90), (330, 40))
                ]
            ],
        },
    }
    return collection(
        point(raster, 50, 60, "a"),
        point(raster, 70, 80, "b"),
        point(raster, 120, 40, "c"),
        box(raster, 220, 100, 280, 150, "roof"),
        point(raster, 300, 250, "d"),
        point(raster, 340, 230, "e"),
        scribble,
    )


def _run(model, raster: Path, out: Path, **kwargs) -> tuple[np.ndarray, list[dict], list[float]]:
    scores: list[float] = []
    segment_raster(
        model,
        raster,
        _prompts(raster),
        out,
        vector=out.with_suffix(".geojson"),
        bands=(1, 2, 3),
        polygon_as="mask",
        progress=False,
        on_window=lambda _, results: scores.extend(r.score for r in results),
        **kwargs,
    )
    with rasterio.open(out) as dst:
        values = dst.read(1)
    features = json.loads(out.with_suffix(".geojson").read_text())["features"]
    return values, features, scores


def _by_id(features: list[dict]) -> dict:
    return {f["properties"]["prompt_id"]: f["properties"] for f in features}


@pytest.mark.parametrize("name", ["sam.encoder.onnx", "sam.decoder.onnx", "sam.onnx", "sam"])
def test_either_file_or_the_stem_names_the_pair(sam_pair_files, name: str) -> None:
    _, folder = sam_pair_files
    paths = sam_pair(folder / name)
    assert paths == {
        "sam-image-encoder": folder / "sam.encoder.onnx",
        "sam-prompt-decoder": folder / "sam.decoder.onnx",
    }


def assert_segments_match(source, exported, naip_crop: Path, tmp_path: Path) -> None:
    """segment-raster with an exported pair against the PyTorch model file (one criterion for all)."""
    want, want_features, want_scores = _run(source, naip_crop, tmp_path / "torch.tif")
    got, got_features, got_scores = _run(exported, naip_crop, tmp_path / "exported.tif")
    assert len(want_scores) == len(got_scores) == 7
    np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=SCORE_TOLERANCE)
    assert len(np.unique(want)) > 3, "the tiny model should claim pixels for several prompts"
    differ = want != got
    assert differ.mean() <= MASK_TOLERANCE, f"{differ.sum()} of {differ.size} pixels differ"
    want_props, got_props = _by_id(want_features), _by_id(got_features)
    assert want_props.keys() == got_props.keys() and len(want_props) >= 4
    for pid, props in want_props.items():
        assert got_props[pid]["value"] == props["value"]
        # scores are rounded to 4 decimals in the file
        assert abs(got_props[pid]["score"] - props["score"]) <= SCORE_TOLERANCE + 1e-9, pid
    with rasterio.open(tmp_path / "torch.tif") as a, rasterio.open(tmp_path / "exported.tif") as b:
        assert (a.crs, a.transform, a.dtypes, a.nodata) == (b.crs, b.transform, b.dtypes, b.nodata)


def test_segment_raster_on_onnxruntime_matches_pytorch(
    sam_pair_files, naip_crop: Path, tmp_path: Path
) -> None:
    source, folder = sam_pair_files
    assert_segments_match(source, folder / "sam.encoder.onnx", naip_crop, tmp_path)


def segment_cli(naip_crop: Path, tmp_path: Path):
    """`rsvit segment-raster` with one point prompt on the crop; the returned call adds the other options."""
    prompts = tmp_path / "prompts.geojson"
    prompts.write_text(json.dumps(collection(point(naip_crop, 50, 60, "a"))))
    base = ["--input", str(naip_crop), "--bands", "1,2,3", "--prompts", str(prompts), "--quiet"]

    def cli(*argv) -> int:
        parser = add_segment_raster_arguments(argparse.ArgumentParser())
        return run_segment_raster(parser.parse_args([*base, *argv]))

    return cli


def test_cli_runtime_option(sam_pair_files, naip_crop: Path, tmp_path: Path, capsys) -> None:
    _, folder = sam_pair_files
    cli = segment_cli(naip_crop, tmp_path)
    stem = str(folder / "sam")
    assert cli("--model", stem, "--runtime", "onnxruntime", "--output", str(tmp_path / "a.tif")) == 0
    assert json.loads(capsys.readouterr().out)["prompts"] == 1
    # the .onnx suffix alone picks ONNX Runtime
    assert cli("--model", f"{stem}.decoder.onnx", "--output", str(tmp_path / "b.tif")) == 0
    capsys.readouterr()
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert (
        cli("--model", f"{stem}.encoder.onnx", "--runtime", "torch", "--output", str(tmp_path / "c.tif")) == 2
    )
    assert "run it with the onnxruntime runtime" in capsys.readouterr().err
    assert (
        cli(
            "--model",
            stem,
            "--runtime",
            "onnxruntime",
            "--encoder-dtype",
            "bfloat16",
            "--output",
            str(tmp_path / "d.tif"),
        )
        == 2
    )
    assert "exported graphs run in float32" in capsys.readouterr().err
    parser = add_segment_raster_arguments(argparse.ArgumentParser())
    text = ["--model", stem, "--input", str(naip_crop), "--output", str(tmp_path / "e.tif"), "--text", "roof"]
    text += ["--clip-model", str(tmp_path / "clip.pt")]  # missing: --text runs on the graphs, CLIP is checked
    assert run_segment_raster(parser.parse_args([*text, "--runtime", "onnxruntime"])) == 2
    assert "CLIP checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "c.tif").exists() and not (tmp_path / "d.tif").exists()
    assert not (tmp_path / "e.tif").exists()


def assert_masks_raster_cli_matches(source, exported, naip_crop: Path, tmp_path: Path, capsys) -> None:
    """`rsvit masks-raster` on an exported pair against masks_raster on the PyTorch model file."""
    # thresholds off: the tiny fixture model's masks are neither confident nor stable
    settings = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    want = masks_raster(
        source, naip_crop, tmp_path / "torch.tif", bands=(1, 2, 3), progress=False, **settings
    )
    argv = ["--model", str(exported), "--input", str(naip_crop), "--output", str(tmp_path / "o.tif")]
    argv += [
        "--bands",
        "1,2,3",
        "--points-per-side",
        "6",
        "--pred-iou-thresh",
        "0",
        "--stability-thresh",
        "0",
    ]
    assert run_masks_raster(add_masks_raster_arguments(argparse.ArgumentParser()).parse_args(argv)) == 0
    got = json.loads(capsys.readouterr().out)
    assert want["instances"] > 3
    assert (got["candidates"], got["instances"]) == (want["candidates"], want["instances"])
    with rasterio.open(tmp_path / "torch.tif") as a, rasterio.open(tmp_path / "o.tif") as b:
        differ = a.read(1) != b.read(1)
    assert differ.mean() <= MASK_TOLERANCE, f"{differ.sum()} of {differ.size} pixels differ"


def test_masks_raster_on_onnxruntime_matches_pytorch(
    sam_pair_files, naip_crop: Path, tmp_path: Path, capsys
) -> None:
    source, folder = sam_pair_files
    assert_masks_raster_cli_matches(source, folder / "sam.onnx", naip_crop, tmp_path, capsys)


def test_files_without_metadata_or_of_another_role_are_refused(sam_pair_files, tmp_path: Path) -> None:
    _, folder = sam_pair_files
    encoder, decoder = folder / "sam.encoder.onnx", folder / "sam.decoder.onnx"
    with pytest.raises(ValueError, match=r"role 'sam-prompt-decoder'.*not the sam-image-encoder graph"):
        OnnxSam(decoder, decoder)
    with pytest.raises(ValueError, match=r"role 'sam-image-encoder'.*not the sam-prompt-decoder graph"):
        OnnxSam(encoder, encoder)
    proto = onnx.load(str(encoder))
    write_onnx_metadata(proto, read_onnx_metadata(encoder).with_changes(role="model"))
    whole = tmp_path / "whole.onnx"
    onnx.save(proto, str(whole))
    with pytest.raises(ValueError, match="holds a whole model"):
        OnnxSam(whole, decoder)
    proto = onnx.load(str(decoder))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.decoder.onnx"
    onnx.save(proto, str(bare))
    (tmp_path / "bare.encoder.onnx").write_bytes(encoder.read_bytes())
    with pytest.raises(MissingMetadataError):
        load_onnx_sam(bare)
    with pytest.raises(FileNotFoundError, match="two files"):
        load_onnx_sam(tmp_path / "missing.onnx")


def test_onnxruntime_refuses_other_devices_and_modules(
    sam_pair_files, naip_crop: Path, tmp_path: Path
) -> None:
    source, folder = sam_pair_files
    prompts = collection(point(naip_crop, 50, 60, "a"))
    with pytest.raises(ValueError, match="use device cpu"):
        segment_raster(
            folder / "sam", naip_crop, prompts, tmp_path / "m.tif", runtime="onnxruntime", device="meta"
        )
    module = load_promptable_model(source)
    with pytest.raises(ValueError, match="not a module"):
        segment_raster(module, naip_crop, prompts, tmp_path / "m.tif", runtime="onnxruntime")
    assert not (tmp_path / "m.tif").exists()
