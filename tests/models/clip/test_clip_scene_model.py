"""CLIP scene classifiers as rsvit model files, and tile class maps of a real GeoTIFF through the engine."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from tiny_clip import seeded_tiny_clip

from rsvit.models import load_model, save_model
from rsvit.models.clip import (
    ClipSceneClassifier,
    WindowScores,
    ZeroShotClassifier,
    build_text_classifier,
    scene_metadata,
    scene_spec,
    wrap_model,
    zero_shot_head,
)

CLASSES = ["forest", "river or lake", "residential area"]
TEMPLATES = ("a satellite photo of {}.",)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    name, model = seeded_tiny_clip(tmp_path_factory.mktemp("cfg"), seed=3)
    clip = wrap_model(model, name)
    weights = build_text_classifier(clip.model, clip.tokenizer, CLASSES, TEMPLATES)
    return clip, weights


def test_zero_shot_head_equals_the_zero_shot_classifier(tiny):
    clip, weights = tiny
    images = torch.randn(3, 3, 64, 64)
    scene = ClipSceneClassifier(clip.model.visual, zero_shot_head(weights, 100.0)).eval()
    with torch.no_grad():
        logits = scene(images)
    torch.testing.assert_close(
        logits, ZeroShotClassifier(clip.model, weights).logits(images), atol=1e-4, rtol=0
    )
    with torch.no_grad():  # other sizes are resized to the tower's 64 px
        assert scene(torch.randn(2, 3, 96, 80)).shape == (2, 3)


def test_model_file_round_trip(tiny, tmp_path):
    from rsvit.models import ModelSpec, build_model

    clip, _ = tiny
    torch.manual_seed(0)
    probe = torch.nn.Linear(32, 3)  # any linear head: a zero-shot classifier or a fitted probe
    scene = ClipSceneClassifier(clip.model.visual, probe).eval()
    spec = scene_spec(clip.architecture, 3)
    assert (spec.task, spec.head, spec.backbone) == ("classification", "linear", "open_clip:rsvit-tiny-clip")
    meta = scene_metadata(clip.preprocess, scene.image_size, CLASSES)
    path = tmp_path / "scene.safetensors"
    save_model(path, scene, spec, meta)
    loaded, loaded_spec, loaded_meta = load_model(path)
    assert loaded_spec == spec and loaded_spec.backbone_kwargs["embed_dim"] == 32
    assert loaded_meta.classes == tuple(CLASSES) and loaded_meta.input_size == (3, 64, 64)
    assert loaded_meta.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), scene(images), rtol=0, atol=0)
    # the spec alone rebuilds the tower, without the open_clip config being registered anywhere
    assert sum(p.numel() for p in build_model(spec.to_dict()).parameters()) == sum(
        p.numel() for p in scene.parameters()
    )
    with pytest.raises(ValueError, match="takes 3 bands"):
        build_model(ModelSpec.from_dict({**spec.to_dict(), "in_chans": 4}))


def _window_input(path, y0, x0, size, meta):
    with rasterio.open(path) as src:
        window = src.read(window=rasterio.windows.Window(x0, y0, size, size)).astype(np.float32) / 255.0
    mean = np.array(meta.mean, np.float32)[:, None, None]
    std = np.array(meta.std, np.float32)[:, None, None]
    return torch.from_numpy((window - mean) / std)[None]


def test_tile_class_map_of_a_real_geotiff(tiny, data_dir, tmp_path):
    from rsvit.inference import WindowPlan, predict_raster

    clip, weights = tiny
    scene = ClipSceneClassifier(clip.model.visual, zero_shot_head(weights, 100.0)).eval()
    meta = scene_metadata(clip.preprocess, scene.image_size, CLASSES)
    source = data_dir / "geotiff" / "RGB.byte.tif"
    out = tmp_path / "tiles.tif"
    report = predict_raster(
        WindowScores(scene, 3),
        source,
        out,
        task="segmentation",
        metadata=meta,
        window=128,
        overlap=0,
        probabilities="float16",
        progress=False,
    )
    with rasterio.open(source) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert dst.dtypes[0] == "uint8" and dst.nodata == 255
        classes = dst.read(1)
        hole = (src.read() == 0).all(axis=0)
    assert (classes[hole] == 255).all() and set(np.unique(classes[~hole])) <= {0, 1, 2}
    with rasterio.open(tmp_path / "tiles_probabilities.tif") as probs_file:
        assert probs_file.descriptions == tuple(CLASSES)
        probs = probs_file.read()
    valid = ~hole
    np.testing.assert_array_equal(classes[valid], probs[:, valid].argmax(axis=0))
    assert np.allclose(probs[:, valid].sum(axis=0), 1.0, atol=5e-3)

    # a window inside the scene: its centre pixel carries that window's own prediction
    plan = WindowPlan.create(718, 791, window=128, overlap=0)
    assert report.windows + report.skipped_windows == len(plan) and report.skipped_windows > 0  # corners
    inside = [w for w in plan if 0 < w.row < plan.n_rows - 1 and 0 < w.col < plan.n_cols - 1]
    window = next(w for w in inside if not hole[w.y0 : w.y1, w.x0 : w.x1].any())
    with torch.no_grad():
        expected = scene(_window_input(source, window.y0, window.x0, 128, meta)).softmax(dim=1)[0]
    cy, cx = window.y0 + 64, window.x0 + 64
    assert classes[cy, cx] == int(expected.argmax())
    np.testing.assert_allclose(probs[:, cy, cx], expected.numpy(), atol=2e-3)
    tile = classes[window.y0 + 8 : window.y1 - 8, window.x0 + 8 : window.x1 - 8]
    assert (tile == tile[0, 0]).all()  # one class per tile away from the seams
