"""Automatic SAM masks over a raster larger than one window: de-duplication across window overlaps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.features import rasterize, shapes
from rasterio.transform import Affine

from rsvit.inference.automatic import masks_raster, touches_inner_edge, window_grid
from rsvit.models.promptable import SamAutomaticMaskGenerator, SamConfig, build_sam

TRANSFORM = Affine(0.6, 0.0, 600000.0, 0.0, -0.6, 5200000.0)  # 0.6 m pixels, UTM 14N like NAIP
SIDE = 20
# x0 of each square: inside one window, inside both (overlap), cut by the first window's right edge, last
SQUARES = (20, 140, 165, 260)


@pytest.fixture()
def squares_raster(tmp_path: Path) -> Path:
    image = np.full((3, 120, 300), 20, np.uint8)
    for x0 in SQUARES:
        image[:, 50 : 50 + SIDE, x0 : x0 + SIDE] = 230
    path = tmp_path / "squares.tif"
    profile = {"driver": "GTiff", "width": 300, "height": 120, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", crs="EPSG:26914", transform=TRANSFORM, **profile) as dst:
        dst.write(image)
    return path


def tiny_sam_kwargs() -> dict:
    return {
        "img_size": 64,
        "patch_size": 16,
        "encoder_embed_dim": 32,
        "encoder_depth": 2,
        "encoder_num_heads": 2,
        "encoder_window_size": 2,
        "encoder_global_attn_indexes": (1,),
        "prompt_embed_dim": 32,
        "mask_in_chans": 4,
        "decoder_depth": 1,
        "decoder_num_heads": 2,
        "decoder_mlp_dim": 32,
        "iou_head_hidden_dim": 16,
    }


@pytest.fixture(scope="module")
def tiny_sam() -> torch.nn.Module:
    """A small SAM with random weights (input 64 pixels); its masks are arbitrary but real."""
    torch.manual_seed(0)
    config = SamConfig(**tiny_sam_kwargs())
    return build_sam(config).eval()


def bright_components(self: SamAutomaticMaskGenerator, image: np.ndarray, trace: list | None = None) -> list:
    """A stand-in generator that finds the bright squares exactly (one record per component)."""
    bright = (image[..., 0] > 128).astype(np.uint8)
    parts = [geom for geom, _ in shapes(bright, mask=bright > 0)]
    records = []
    for k, geom in enumerate(parts, start=1):
        mask = rasterize([(geom, 1)], out_shape=bright.shape, transform=Affine.identity()).astype(bool)
        records.append({"segmentation": mask, "predicted_iou": 0.9 + 0.01 * k, "stability_score": 0.97})
    return records


def test_window_grid_covers_the_raster_with_overlap() -> None:
    windows = window_grid(300, 120, 64, 16)
    covered = np.zeros((120, 300), int)
    for x0, y0, w, h in windows:
        assert w == h == 64
        covered[y0 : y0 + h, x0 : x0 + w] += 1
    assert (covered >= 1).all() and (covered >= 2).any()
    assert touches_inner_edge((60, 5, 63, 10), (0, 0, 64, 64), 300, 120)
    assert not touches_inner_edge((0, 0, 10, 10), (0, 0, 64, 64), 300, 120)  # raster border is no seam
    with pytest.raises(ValueError, match="overlap"):
        window_grid(300, 120, 64, 64)


def test_overlap_gives_no_duplicate_instances(
    squares_raster: Path, tiny_sam: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SamAutomaticMaskGenerator, "generate", bright_components)
    out, vec = tmp_path / "inst.tif", tmp_path / "inst.geojson"
    summary = masks_raster(
        tiny_sam, squares_raster, out, vector=vec, window=176, overlap=52, points_per_side=2, progress=False
    )
    assert summary["windows"] == 2
    assert summary["candidates"] == 3 + 3  # window 0: 20, 140, 165 (cut); window 1: 140, 165, 260
    assert summary["instances"] == len(SQUARES)
    with rasterio.open(out) as dst, rasterio.open(squares_raster) as src:
        assert dst.dtypes[0] == "uint32" and dst.crs == src.crs and dst.transform == src.transform
        ids = dst.read(1)
    assert sorted(np.unique(ids).tolist()) == list(range(len(SQUARES) + 1))
    for x0 in SQUARES:  # each square is exactly one whole instance
        patch = ids[50 : 50 + SIDE, x0 : x0 + SIDE]
        assert len(np.unique(patch)) == 1 and patch[0, 0] > 0
    features = json.loads(vec.read_text())["features"]
    assert len(features) == len(SQUARES)
    for f in features:
        assert f["properties"]["area_px"] == SIDE * SIDE
        assert f["properties"]["area"] == pytest.approx(SIDE * SIDE * 0.36)
        assert 0.9 < f["properties"]["score"] < 1.0


def test_tiny_sam_runs_over_windows_without_overlapping_duplicates(
    squares_raster: Path, tiny_sam: torch.nn.Module, tmp_path: Path
) -> None:
    out = tmp_path / "inst.tif"
    summary = masks_raster(
        tiny_sam,
        squares_raster,
        out,
        vector=tmp_path / "inst.geojson",
        window=96,
        overlap=24,
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        progress=False,
    )
    assert summary["windows"] == len(window_grid(300, 120, 96, 24))
    with rasterio.open(out) as dst:
        ids = dst.read(1)
    assert summary["instances"] > 0 and 0 < ids.max() <= summary["instances"]
    boxes = []
    for value in np.unique(ids[ids > 0]):
        rows, cols = np.nonzero(ids == value)
        boxes.append([cols.min(), rows.min(), cols.max(), rows.max()])
    if len(boxes) > 1:  # what is left on the raster never holds two copies of one box
        from torchvision.ops import box_iou

        iou = box_iou(torch.tensor(boxes, dtype=torch.float32), torch.tensor(boxes, dtype=torch.float32))
        iou.fill_diagonal_(0)
        assert iou.max() < 0.99


def test_existing_output_is_refused(squares_raster: Path, tiny_sam: torch.nn.Module, tmp_path: Path) -> None:
    out = tmp_path / "inst.tif"
    out.write_bytes(b"keep")
    with pytest.raises(ValueError, match="already exists"):
        masks_raster(tiny_sam, squares_raster, out, progress=False)
    assert out.read_bytes() == b"keep"


def test_cli_commands_with_an_rsvit_model_file(
    squares_raster: Path, tiny_sam: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import argparse

    from rsvit.cli.segment_raster import (
        add_masks_raster_arguments,
        add_segment_raster_arguments,
        run_masks_raster,
        run_segment_raster,
    )
    from rsvit.models.spec import ModelSpec, save_model

    config = {k: list(v) if isinstance(v, tuple) else v for k, v in tiny_sam_kwargs().items()}
    model_file = tmp_path / "sam.safetensors"
    save_model(model_file, tiny_sam, ModelSpec("promptable", "sam_vit_b", head_kwargs=config))
    masks = add_masks_raster_arguments(argparse.ArgumentParser())
    args = masks.parse_args(
        [
            *(
                "--model",
                str(model_file),
                "--input",
                str(squares_raster),
                "--output",
                str(tmp_path / "i.tif"),
            ),
            *(
                "--window",
                "96",
                "--points-per-side",
                "2",
                "--pred-iou-thresh",
                "0",
                "--stability-thresh",
                "0",
            ),
            *("--vector", str(tmp_path / "i.geojson"), "--quiet"),
        ]
    )
    assert run_masks_raster(args) == 0
    assert json.loads(capsys.readouterr().out)["windows"] == len(window_grid(300, 120, 96, 24))
    assert (tmp_path / "i.tif").exists() and (tmp_path / "i.geojson").exists()
    assert run_masks_raster(args) == 2  # outputs exist now
    assert "already exists" in capsys.readouterr().err

    prompts = tmp_path / "prompts.geojson"
    x, y = TRANSFORM @ (150.5, 60.5)
    feature = {
        "type": "Feature",
        "properties": {"prompt_id": 7},
        "geometry": {"type": "Point", "coordinates": [x, y]},
    }
    prompts.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    segment = add_segment_raster_arguments(argparse.ArgumentParser())
    args = segment.parse_args(
        [
            *(
                "--model",
                str(model_file),
                "--input",
                str(squares_raster),
                "--output",
                str(tmp_path / "m.tif"),
            ),
            *("--prompts", str(prompts), "--prompt-crs", "EPSG:26914", "--quiet"),
        ]
    )
    assert run_segment_raster(args) == 0
    assert json.loads(capsys.readouterr().out)["prompts"] == 1
    with rasterio.open(tmp_path / "m.tif") as dst:
        assert set(np.unique(dst.read(1))) <= {0, 1}


def test_model_file_of_another_task_is_refused(squares_raster: Path, tmp_path: Path) -> None:
    from rsvit.models import build_model
    from rsvit.models.spec import ModelSpec, save_model

    spec = ModelSpec("classification", "resnet18", num_classes=2)
    model_file = tmp_path / "classifier.safetensors"
    save_model(model_file, build_model(spec), spec)
    with pytest.raises(ValueError, match="needs a promptable model"):
        masks_raster(model_file, squares_raster, tmp_path / "i.tif", progress=False)


def test_window_index_finds_exactly_the_windows_containing_a_box() -> None:
    from rsvit.inference.automatic import WindowIndex

    windows = window_grid(1000, 700, 128, 32)
    index = WindowIndex(windows)
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, y0 = rng.integers(0, 950), rng.integers(0, 650)
        box = (x0, y0, x0 + rng.integers(0, 60), y0 + rng.integers(0, 60))
        brute = [
            w
            for w in windows
            if box[0] >= w[0] and box[1] >= w[1] and box[2] < w[0] + w[2] and box[3] < w[1] + w[3]
        ]
        assert sorted(index.containing(box)) == sorted(brute)
