"""No seams: predicting across window boundaries equals predicting the scene in one window."""

from __future__ import annotations

import numpy as np
import rasterio
import torch

from rsvit.inference import predict_raster
from rsvit.weights import WeightsMetadata

META = WeightsMetadata(classes=("a", "b", "c"), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _probabilities(model, scene_path, out_path, window, overlap):
    predict_raster(
        model,
        scene_path,
        out_path,
        window=window,
        overlap=overlap,
        probabilities="float16",
        metadata=META,
        progress=False,
        batch_size=3,
    )
    with (
        rasterio.open(out_path) as classes,
        rasterio.open(out_path.with_name(out_path.stem + "_probabilities.tif")) as p,
    ):
        return classes.read(1), p.read()


def test_conv_model_tiles_match_one_window(tmp_path, write_raster, scene, conv_model):
    image = scene(300, 280)
    path = write_raster(tmp_path / "scene.tif", image)
    model = conv_model()
    whole_cls, whole = _probabilities(model, path, tmp_path / "whole.tif", window=512, overlap=0)
    tiled_cls, tiled = _probabilities(model, path, tmp_path / "tiled.tif", window=96, overlap=32)
    # Zero padding makes each window's border pixels wrong; the blend weights hand those over to the
    # neighbour's interior, so the tiled map stays within float16 precision of the single window.
    assert np.abs(tiled - whole).max() < 5e-3
    assert (tiled_cls == whole_cls).mean() > 0.999

    # The test has teeth: one window's own border pixels really differ from the whole-scene prediction.
    x = torch.from_numpy((image.astype(np.float32) / 255 - 0.5) / 0.25)[None]
    with torch.no_grad():
        full = model(x).softmax(1)[0].numpy()
        crop = model(x[..., 64:160, 64:160]).softmax(1)[0].numpy()
    assert np.abs(crop[:, 0, :] - full[:, 64, 64:160]).max() > 0.05


def test_per_pixel_model_is_exact_across_windows(tmp_path, write_raster, scene, pixel_model):
    path = write_raster(tmp_path / "scene.tif", scene(250, 260, seed=3))
    model = pixel_model()
    whole_cls, whole = _probabilities(model, path, tmp_path / "whole.tif", window=512, overlap=0)
    tiled_cls, tiled = _probabilities(model, path, tmp_path / "tiled.tif", window=64, overlap=24)
    np.testing.assert_array_equal(tiled_cls, whole_cls)
    assert np.abs(tiled - whole).max() <= 1e-3  # float16 rounding only
