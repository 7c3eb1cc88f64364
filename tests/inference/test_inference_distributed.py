"""Two Lightning processes sharing the window plan write the same maps as one process."""

from __future__ import annotations

import numpy as np
import rasterio

from rsvit.inference import predict_raster
from rsvit.weights import WeightsMetadata

META = WeightsMetadata(classes=("a", "b", "c"), mean=(0.5,) * 3, std=(0.25,) * 3)


def test_two_cpu_processes_equal_one(tmp_path, write_raster, scene, conv_model):
    image = scene(520, 300, seed=7)
    image[:, :60, :80] = 0
    path = write_raster(tmp_path / "scene.tif", image, nodata=0)
    settings = {"window": 128, "overlap": 32, "batch_size": 2, "probabilities": "float16", "metadata": META}
    model = conv_model()
    single = predict_raster(model, path, tmp_path / "one" / "map.tif", progress=False, **settings)
    double = predict_raster(
        model,
        path,
        tmp_path / "two" / "map.tif",
        progress=False,
        devices=2,
        accelerator="cpu",
        strategy="ddp_spawn",
        **settings,
    )
    assert single.strips == double.strips == 6
    # Each process also runs the window row above its share (needed for blending): one row more in total.
    assert double.windows == single.windows + 3
    for name in ("map.tif", "map_probabilities.tif"):
        with rasterio.open(tmp_path / "one" / name) as a, rasterio.open(tmp_path / "two" / name) as b:
            pa, pb = dict(a.profile), dict(b.profile)
            assert np.array_equal(pa.pop("nodata"), pb.pop("nodata"), equal_nan=True)
            assert pa == pb
            np.testing.assert_array_equal(a.read(), b.read())
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "map.tif",
        "map.tif.aux.xml",  # class names for GDAL (category names, attribute table)
        "map_probabilities.tif",
    ]


def test_ddp_copies_of_the_command_equal_one_process(tmp_path, write_raster, scene):
    """``--strategy ddp`` starts rank 1 as a copy of the command; it writes its share and leaves quietly
    while rank 0 merges, and the result equals a single-process run."""
    import os
    import subprocess
    import sys

    from rsvit.models import ModelSpec, build_model, save_model

    image = scene(400, 260, seed=3)
    image[:, :50, :70] = 0
    path = write_raster(tmp_path / "scene.tif", image, nodata=0)
    spec = ModelSpec("segmentation", "resnet18", head="fcn", num_classes=3, head_kwargs={"channels": 8})
    model_file = tmp_path / "model.safetensors"
    save_model(model_file, build_model(spec), spec, META)
    command = [sys.executable, "-m", "rsvit.inference.cli", "--model", str(model_file), "--input", str(path)]
    options = ["--window", "128", "--overlap", "32", "--quiet", "--devices", "2", "--strategy", "ddp"]
    one = tmp_path / "one" / "map.tif"
    two = tmp_path / "two" / "map.tif"
    predict_raster(model_file, path, one, window=128, overlap=32, progress=False)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [*command, "--output", str(two), *options],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "windows:" in done.stdout
    with rasterio.open(one) as a, rasterio.open(two) as b:
        assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)
        np.testing.assert_array_equal(a.read(), b.read())
    assert sorted(p.name for p in two.parent.iterdir()) == ["map.tif", "map.tif.aux.xml"]
