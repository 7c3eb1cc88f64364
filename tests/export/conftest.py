"""Tiny saved models of every exportable task, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rasterio.windows import Window

from raster_crops import write_crop
from rsvit.models import ModelSpec, build_model, save_model
from rsvit.weights import WeightsMetadata

# test_resnet is timm's tiny ResNet: exports take seconds. The regression head's final ReLU is off so that
# random weights give outputs with a range to compare.
TINY_SPECS = {
    "classification": ModelSpec("classification", "test_resnet", num_classes=7),
    "segmentation": ModelSpec("segmentation", "test_resnet", num_classes=6, head_kwargs={"channels": 16}),
    "change": ModelSpec("change", "test_resnet", backbone_kwargs={"out_index": 3}),
    "regression": ModelSpec(
        "regression",
        "test_resnet",
        in_chans=4,
        head_kwargs={"features": 16, "head_kwargs": {"non_negative": False}},
    ),
}
WINDOW = (64, 96)


def save_tiny(task: str, folder: Path) -> Path:
    spec = TINY_SPECS[task]
    torch.manual_seed(0)
    model = build_model(spec).eval()
    classes = None if task == "regression" else tuple(f"class{i}" for i in range(spec.num_classes))
    meta = WeightsMetadata(
        classes=classes,
        mean=(0.4,) * spec.in_chans,
        std=(0.25,) * spec.in_chans,
        input_size=(spec.in_chans, *WINDOW),
        extra={"palette": [[i * 30, 0, 0] for i in range(spec.num_classes)]} if classes else {},
    )
    path = folder / f"{task}.safetensors"
    save_model(path, model, spec, meta)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {task: save_tiny(task, folder) for task in TINY_SPECS}


@pytest.fixture(scope="session")
def naip_crop(data_dir, tmp_path_factory) -> Path:
    """A 200 x 160 crop of the real NAIP scene (4 bands, UTM), georeferenced like the original."""
    source = data_dir / "geotiff" / "naip" / "m_4709963_se_14_1_20200831.tif"
    path = tmp_path_factory.mktemp("naip") / "crop.tif"
    return write_crop(source, path, Window(300, 200, 200, 160), nodata=0, compress="deflate")
