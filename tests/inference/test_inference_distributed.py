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
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["map.tif", "map_probabilities.tif"]
