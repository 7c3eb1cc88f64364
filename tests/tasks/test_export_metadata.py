"""What the tasks write with an exported model: the band selection ``predict-raster`` applies."""

from __future__ import annotations

from pathlib import Path

from rsvit.tasks import SegmentationTask
from rsvit.weights import read_metadata

TINY = {"backbone": "resnet18", "head": "fcn", "head_kwargs": {"channels": 8}}


def _task() -> SegmentationTask:
    return SegmentationTask(TINY, num_classes=2, class_names=["a", "b"], palette=[[0, 0, 0], [9, 9, 9]])


def test_exported_model_carries_bands_and_their_names(tmp_path: Path) -> None:
    prep = {"input_size": [3, 64, 64], "mean": [0.1] * 3, "std": [0.2] * 3, "bands": [4, 3, 2]}
    meta = read_metadata(_task().export_model(tmp_path / "m.safetensors", prep))
    assert meta.extra["bands"] == [4, 3, 2]
    assert meta.band_names == ("band_4", "band_3", "band_2")
    named = {**prep, "band_names": ["nir", "red", "green"]}
    meta = read_metadata(_task().export_model(tmp_path / "n.safetensors", named))
    assert meta.extra["bands"] == [4, 3, 2] and meta.band_names == ("nir", "red", "green")


def test_no_band_selection_writes_no_bands(tmp_path: Path) -> None:
    meta = read_metadata(_task().export_model(tmp_path / "m.safetensors", {"input_size": [3, 64, 64]}))
    assert "bands" not in meta.extra and meta.band_names is None
