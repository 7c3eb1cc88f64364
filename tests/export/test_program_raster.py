"""``predict_raster`` on a ``.pt2`` archive alone: the same GeoTIFF as the model file it came from."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from rsvit.export.api import export_model
from rsvit.inference.engine import predict_raster


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile


@pytest.fixture(scope="module")
def programs(tiny_models, tmp_path_factory):
    """``.pt2`` exports of the tiny segmentation and regression models, and their metadata."""
    folder = tmp_path_factory.mktemp("programs")
    found = {}
    for task in ("segmentation", "regression"):
        target = folder / f"{task}.pt2"
        _, meta = export_model(tiny_models[task], target, format="exported-program", window=(64, 64))
        found[task] = (target, meta)
    return found


@pytest.mark.parametrize(("task", "bands"), [("segmentation", "1,2,3"), ("regression", None)])
def test_program_output_equals_the_pytorch_path(task, bands, tiny_models, programs, naip_crop, tmp_path):
    source = tiny_models[task]
    target, _ = programs[task]
    common = {"bands": bands, "window": 64, "overlap": 16, "progress": False}
    if task == "segmentation":
        common["probabilities"] = "float16"  # random weights give one class everywhere: compare scores
    eager = predict_raster(source, naip_crop, tmp_path / "eager.tif", **common)
    program = predict_raster(target, naip_crop, tmp_path / "program.tif", **common)
    assert program.windows == eager.windows > 4
    want, want_profile = _read(eager.output)
    got, got_profile = _read(program.output)
    assert got_profile["crs"] == want_profile["crs"] and got_profile["transform"] == want_profile["transform"]
    if task == "segmentation":
        np.testing.assert_array_equal(got, want)
        want, _ = _read(eager.probabilities)
        got, _ = _read(program.probabilities)
        assert float(want.std()) > 0
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), atol=1e-3)
    else:
        assert float(want.std()) > 0
        np.testing.assert_allclose(got, want, atol=1e-5 * float(np.ptp(want)))


def test_program_refuses_windows_it_does_not_hold_at(programs, naip_crop, tmp_path):
    target, meta = programs["segmentation"]
    # the captured UperNet crops to multiples of its stride: other sizes would be wrong, so they are refused
    assert meta.size_multiple == 32 or not meta.dynamic_spatial
    with pytest.raises(ValueError, match=r"multiples of 32|only takes 64x64"):
        predict_raster(target, naip_crop, tmp_path / "out.tif", bands="1,2,3", window=80, progress=False)


def _save_identity(path, extra_files):
    import torch

    program = torch.export.export(torch.nn.Identity(), (torch.zeros(1, 3, 8, 8),))
    torch.export.save(program, path, extra_files=extra_files)


def test_program_without_rsvit_metadata_is_refused(tmp_path):
    from rsvit.export import MissingMetadataError

    _save_identity(tmp_path / "bare.pt2", {})
    with pytest.raises(MissingMetadataError, match="rsvit export"):
        predict_raster(tmp_path / "bare.pt2", tmp_path / "in.tif", tmp_path / "out.tif", progress=False)


def test_a_sam_graph_is_not_a_raster_model(tmp_path):
    from rsvit.export import ExportedProgramModel, ExportError, ExportMetadata
    from rsvit.models import ModelSpec
    from rsvit.weights import WeightsMetadata

    spec = ModelSpec("promptable", "sam_vit_b")
    meta = ExportMetadata(spec, WeightsMetadata(), window=(64, 64), role="sam-image-encoder")
    _save_identity(tmp_path / "enc.pt2", {"rsvit.json": meta.to_json()})
    with pytest.raises(ExportError, match="load_sam_graph"):
        ExportedProgramModel(tmp_path / "enc.pt2")
