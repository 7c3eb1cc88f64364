"""A crash never leaves a file under the final name, and --resume finishes the same map."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from rsvit.inference import predict_raster
from rsvit.weights import WeightsMetadata

META = WeightsMetadata(classes=("a", "b", "c"), mean=(0.5,) * 3, std=(0.25,) * 3)
SETTINGS = {"window": 128, "overlap": 32, "batch_size": 1, "probabilities": "uint8", "metadata": META}


class CrashError(RuntimeError):
    pass


def _fail_after(model, calls: int, error: type[BaseException] = CrashError):
    """Makes the model raise on forward call number ``calls + 1`` (weights untouched); returns the hook."""
    count = {"n": 0}

    def hook(module, args):
        count["n"] += 1
        if count["n"] > calls:
            raise error("simulated failure")

    return model.register_forward_pre_hook(hook)


def _read(path):
    with rasterio.open(path) as classes, rasterio.open(path.with_name(path.stem + "_probabilities.tif")) as p:
        return classes.read(1), p.read(), classes.profile


@pytest.fixture
def scene_path(tmp_path, write_raster, scene):
    return write_raster(tmp_path / "scene.tif", scene(600, 300, seed=5))  # 6 strips of 3 windows


def test_crash_leaves_no_output_and_resume_equals_an_uninterrupted_run(tmp_path, scene_path, conv_model):
    model = conv_model()
    reference = tmp_path / "reference.tif"
    full = predict_raster(model, scene_path, reference, progress=False, **SETTINGS)
    assert full.strips == 6 and full.windows == 18

    out = tmp_path / "out" / "map.tif"
    hook = _fail_after(model, calls=10)  # strips 0-2 (9 windows) finished, then a crash in strip 3
    with pytest.raises(CrashError):
        predict_raster(model, scene_path, out, progress=False, **SETTINGS)
    hook.remove()
    assert not out.exists() and not (out.parent / "map_probabilities.tif").exists()
    state = json.loads((out.parent / ".map.tif.partial.json").read_text())
    assert state["strips_done"] == 3 and state["n_strips"] == 6

    resumed = predict_raster(model, scene_path, out, progress=False, resume=True, **SETTINGS)
    assert resumed.resumed_from == 3
    assert resumed.windows == 3 * 3 + 3  # the remaining strips plus the window row above them, for blending
    got_cls, got_p, got_profile = _read(out)
    ref_cls, ref_p, ref_profile = _read(reference)
    np.testing.assert_array_equal(got_cls, ref_cls)
    np.testing.assert_array_equal(got_p, ref_p)
    assert got_profile["transform"] == ref_profile["transform"]
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "map.tif",
        "map.tif.aux.xml",
        "map_probabilities.tif",
    ]


def test_resume_refuses_different_settings_and_restarts_without_the_flag(tmp_path, scene_path, conv_model):
    model = conv_model()
    out = tmp_path / "map.tif"
    hook = _fail_after(model, calls=4, error=KeyboardInterrupt)  # Ctrl-C during strip 1
    with pytest.raises(KeyboardInterrupt):
        predict_raster(model, scene_path, out, progress=False, **SETTINGS)
    hook.remove()
    assert not out.exists()
    with pytest.raises(ValueError, match=r"cannot resume .*window: 128 then, 256 now.*without --resume"):
        predict_raster(model, scene_path, out, progress=False, resume=True, **{**SETTINGS, "window": 256})
    other = conv_model(seed=1)
    with pytest.raises(ValueError, match=r"cannot resume .*model"):
        predict_raster(other, scene_path, out, progress=False, resume=True, **SETTINGS)
    report = predict_raster(model, scene_path, out, progress=False, **SETTINGS)  # no --resume: start over
    assert report.resumed_from == 0 and report.windows == 18


def test_crash_in_the_first_strip_leaves_nothing(tmp_path, scene_path, conv_model):
    model = conv_model()
    hook = _fail_after(model, calls=1)
    with pytest.raises(CrashError):
        predict_raster(model, scene_path, tmp_path / "map.tif", progress=False, **SETTINGS)
    hook.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]
