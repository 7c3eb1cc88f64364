"""Scene datasets: label files, class folders, MillionAID hierarchy, band rules and bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio
import rasterio.transform
import torch
from PIL import Image

from rsvit.data.classification.datasets import (
    FolderSceneDataset,
    LabelFileError,
    LabelFileSceneDataset,
    MillionAIDDataset,
    SceneDataset,
    SceneRecord,
    collate_skip_none,
    read_label_file,
)
from rsvit.data.classification.transforms import SceneTransform

RSSCN7_CLASSES = ["aGrass", "bField", "cIndustry", "dRiverLake", "eForest", "fResident", "gParking"]


def _png(path, value, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    shape = (size[1], size[0], channels) if channels > 1 else (size[1], size[0])
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    for c, name in enumerate(["beach", "airport", "forest"]):
        for i in range(4):
            _png(root / name / f"{name}_{i}.png", 10 * c + i)
    return root


def test_folder_dataset_classes_sorted_and_samples(tree):
    ds = FolderSceneDataset(tree)
    assert ds.classes == ["airport", "beach", "forest"]
    assert len(ds) == 12
    assert ds.class_counts() == {"airport": 4, "beach": 4, "forest": 4}
    sample = ds[9]
    assert sample["label"] == 2 and sample["path"].endswith("forest_1.png")
    assert sample["image"].shape == (3, 10, 12) and sample["image"].dtype == torch.float32
    assert torch.allclose(sample["image"], torch.full((3, 10, 12), 21 / 255))


def test_folder_dataset_fixed_class_list_and_missing_class(tree):
    ds = FolderSceneDataset(tree, classes=["forest", "beach"])
    assert ds.classes == ["forest", "beach"] and len(ds) == 8
    with pytest.raises(FileNotFoundError, match="desert"):
        FolderSceneDataset(tree, classes=["forest", "desert"])


def test_empty_class_folder_and_empty_root_are_errors(tree, tmp_path):
    (tree / "desert").mkdir()
    with pytest.raises(ValueError, match=r"desert.*no images"):
        FolderSceneDataset(tree)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        FolderSceneDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        FolderSceneDataset(tmp_path / "nowhere")


def test_label_file_dataset_reads_rsp_format(tmp_path):
    root = tmp_path / "ucm"
    for name, value in [("a.png", 1), ("b.png", 2), ("c.png", 3)]:
        _png(root / "all_img" / name, value)
    (root / "train_labels_82_1.txt").write_text("a.png dry_field 0\nb.png harbor 1\n\nc.png dry_field 0\n")
    ds = LabelFileSceneDataset(root, "train_labels_82_1.txt")
    assert ds.classes == ["dry_field", "harbor"]
    assert ds.targets == [0, 1, 0]
    assert ds[1]["label"] == 1


def test_label_file_unknown_class_names_file_and_line(tmp_path):
    label = tmp_path / "valid.txt"
    label.write_text("a.png dry_field 0\nb.png volcano 1\n")
    with pytest.raises(LabelFileError, match=r"valid\.txt:2: unknown class 'volcano'"):
        read_label_file(label, classes=["dry_field", "harbor"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.png dry_field\n", r":1: expected '<file name> <class name> <class id>'"),
        ("a.png dry_field zero\n", r":1: class id 'zero' is not an integer"),
        ("a.png dry_field 0\nb.png harbor 0\n", r":2: class id 0 is 'harbor' here but 'dry_field'"),
        ("a.png dry_field 1\n", r"ids must run 0..N-1 \(missing \[0\]\)"),
        ("\n# only a comment\n", "no labelled images"),
    ],
)
def test_label_file_format_errors(tmp_path, text, message):
    label = tmp_path / "labels.txt"
    label.write_text(text)
    with pytest.raises(LabelFileError, match=message):
        read_label_file(label)


def test_label_file_with_wrong_id_for_known_class(tmp_path):
    label = tmp_path / "labels.txt"
    label.write_text("a.png harbor 0\n")
    with pytest.raises(LabelFileError, match=r":1: class 'harbor' has id 1"):
        read_label_file(label, classes=["dry_field", "harbor"])


def test_label_file_listing_missing_images(tmp_path):
    (tmp_path / "all_img").mkdir()
    (tmp_path / "t.txt").write_text("gone.png dry_field 0\n")
    with pytest.raises(FileNotFoundError, match=r"1 listed images do not exist.*gone\.png"):
        LabelFileSceneDataset(tmp_path, "t.txt")


def test_millionaid_leaf_folders_are_classes(tmp_path):
    root = tmp_path / "millionaid"
    _png(root / "agriculture_land" / "arable_land" / "dry_field" / "P1.jpg", 1)
    _png(root / "agriculture_land" / "arable_land" / "paddy_field" / "P2.jpg", 2)
    _png(root / "agriculture_land" / "woodland" / "P3.jpg", 3)  # a second-level leaf
    _png(root / "water_area" / "beach" / "P4.jpg", 4)
    ds = MillionAIDDataset(root)
    assert ds.classes == ["beach", "dry_field", "paddy_field", "woodland"]
    assert ds.hierarchy["dry_field"] == ("agriculture_land", "arable_land", "dry_field")
    assert ds.hierarchy["woodland"] == ("agriculture_land", "woodland")
    assert [ds.classes[r.label] for r in ds.records] == ["beach", "dry_field", "paddy_field", "woodland"]
    _png(root / "water_area" / "x" / "dry_field" / "P5.jpg", 5)
    with pytest.raises(ValueError, match="'dry_field' appears twice"):
        MillionAIDDataset(root)


def test_grey_images_are_repeated_and_other_band_counts_rejected(tmp_path):
    grey = _png(tmp_path / "grey.png", 7, mode="L")
    rgba = _png(tmp_path / "rgba.png", 9, mode="RGBA")
    ds = SceneDataset([SceneRecord(grey, 0), SceneRecord(rgba, 0)], ["x"])
    image = ds[0]["image"]
    assert image.shape == (3, 10, 12) and torch.equal(image[0], image[2])
    with pytest.raises(ValueError, match=r"rgba\.png has 4 bands but the model expects 3.*bands=\[\.\.\.\]"):
        ds[1]
    ds_rgb = SceneDataset([SceneRecord(rgba, 0)], ["x"], bands=[1, 2, 3])
    assert ds_rgb[0]["image"].shape == (3, 10, 12)


def test_four_band_geotiff_for_a_four_band_model(tmp_path):
    path = tmp_path / "rgbn.tif"
    data = np.arange(4 * 20 * 20, dtype=np.uint16).reshape(4, 20, 20)
    profile = {
        "driver": "GTiff",
        "width": 20,
        "height": 20,
        "count": 4,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": rasterio.transform.from_origin(500000, 4000020, 1, 1),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(ValueError, match="has 4 bands but the model expects 3"):
        SceneDataset([SceneRecord(path, 0)], ["x"])[0]
    transform = SceneTransform(False, 16, mean=[0.5] * 4, std=[0.25] * 4, crop_pct=1.0)
    ds = SceneDataset([SceneRecord(path, 0)], ["x"], transform=transform, num_bands=4)
    image = ds[0]["image"]
    assert image.shape == (4, 16, 16) and torch.isfinite(image).all()


def test_unreadable_image_raises_or_is_skipped_with_warning(tmp_path, caplog):
    good = _png(tmp_path / "good.png", 5)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    records = [SceneRecord(good, 0), SceneRecord(bad, 0)]
    with pytest.raises(OSError, match=r"cannot read image .*bad\.jpg"):
        SceneDataset(records, ["x"])[1]
    ds = SceneDataset(records, ["x"], on_error="skip")
    with caplog.at_level(logging.WARNING):
        batch = collate_skip_none([ds[0], ds[1]])
    assert ds.num_skipped == 1
    assert "skipping unreadable image" in caplog.text and "bad.jpg" in caplog.text
    assert batch["image"].shape[0] == 1 and batch["path"] == [str(good)]
    assert collate_skip_none([None, None]) is None


def test_plot_returns_a_figure(tree):
    ds = FolderSceneDataset(tree)
    fig = ds.plot(ds[0], prediction=2)
    assert "airport" in fig.axes[0].get_title() and "forest" in fig.axes[0].get_title()


def test_rsscn7_dev_as_class_folders(data_dir):
    ds = FolderSceneDataset(data_dir / "rsscn7-dev")
    assert ds.classes == RSSCN7_CLASSES
    assert set(ds.class_counts().values()) == {100}
    sample = ds[150]
    assert sample["label"] == 1 and sample["image"].shape == (3, 256, 256)
    assert 0.0 <= float(sample["image"].min()) < float(sample["image"].max()) <= 1.0


def test_classification_figure_single_band_without_label_is_grey_and_untitled():
    from rsvit.viz.classification import classification_figure

    fig = classification_figure(torch.arange(16.0).reshape(1, 4, 4))
    shown = fig.axes[0].images[0].get_array()
    assert fig.axes[0].get_title() == ""
    assert shown.shape == (4, 4) and float(shown.min()) == 0.0 and float(shown.max()) == 1.0
