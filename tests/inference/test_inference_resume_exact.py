"""A run killed with SIGKILL and resumed writes the same bytes as an uninterrupted run.

The model here mixes a trace of its batch into every window's output, on purpose: a resumed run that
grouped its windows into other batches than the uninterrupted run (which is what made resumed
probabilities differ in the last bit before batches were cut at window rows) cannot pass.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import rasterio

SCRIPT = textwrap.dedent(
    """
    import os
    import signal
    import sys

    import torch
    from torch import nn

    from rsvit.inference import predict_raster
    from rsvit.weights import WeightsMetadata


    class BatchCoupled(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.conv(x)
            return y + 1e-3 * y.mean(dim=0, keepdim=True)  # depends on the other windows of the batch


    def run(scene, out, resume=False, kill_at=None):
        model = BatchCoupled().eval()
        if kill_at is not None:
            calls = [0]

            def hook(module, args):
                calls[0] += 1
                if calls[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            model.register_forward_pre_hook(hook)
        meta = WeightsMetadata(classes=("a", "b", "c"), mean=(0.5,) * 3, std=(0.25,) * 3)
        return predict_raster(
            model, scene, out, window=32, overlap=8, batch_size=3, probabilities="float16",
            metadata=meta, resume=resume, progress=False,
        )


    if __name__ == "__main__":
        run(sys.argv[1], sys.argv[2], kill_at=int(sys.argv[3]))
    """
)


def _load(path):
    spec = importlib.util.spec_from_file_location("resume_exact_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bytes(path):
    with rasterio.open(path) as classes, rasterio.open(path.with_name(path.stem + "_probabilities.tif")) as p:
        return classes.read(), p.read()


def test_sigkill_then_resume_is_bit_identical(tmp_path, write_raster, scene):
    scene_path = write_raster(tmp_path / "scene.tif", scene(128, 104, seed=7))  # 5 window rows of 4
    script = tmp_path / "run_scene.py"
    script.write_text(SCRIPT)
    module = _load(script)
    reference = tmp_path / "reference.tif"
    module.run(scene_path, reference)

    out = tmp_path / "out" / "map.tif"
    out.parent.mkdir()
    # 2 batches per window row (3 + 1 windows): call 6 is the second batch of row 2, mid-strip
    done = subprocess.run(
        [sys.executable, str(script), str(scene_path), str(out), "6"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not out.exists()
    state = json.loads((out.parent / ".map.tif.partial.json").read_text())
    assert 0 < state["strips_done"] < state["n_strips"] == 5

    report = module.run(scene_path, out, resume=True)
    assert report.resumed_from == state["strips_done"]
    got_classes, got_p = _bytes(out)
    ref_classes, ref_p = _bytes(reference)
    assert got_p.dtype == np.float32  # float16 values: any change in summation would show
    np.testing.assert_array_equal(got_classes, ref_classes)
    assert got_p.tobytes() == ref_p.tobytes()
