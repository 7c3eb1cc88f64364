"""Splitting real DOTA images into overlapping patches and merging detections back."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import shapely
import torch
from PIL import Image

from rsvit.data.detection.labels import DOTA_V1_0_CLASSES, DotaLabels, read_labels
from rsvit.data.detection.split import (
    merge_patch_detections,
    parse_patch_name,
    patch_name,
    split_dataset,
    split_image,
    window_origins,
)
from rsvit.ops import box_iou_rotated
from rsvit.ops.reference import box_iou_rotated_shapely


def load(data_dir: Path, name: str) -> tuple[np.ndarray, DotaLabels]:
    root = data_dir / "dota-samples"
    with Image.open(root / "images" / f"{name}.png") as img:
        image = np.asarray(img)
    return image, read_labels(root / "labelTxt" / f"{name}.txt", classes=DOTA_V1_0_CLASSES)


def test_window_origins_cover_with_overlap() -> None:
    assert window_origins(1111, 1024, 200) == [0, 87]
    assert window_origins(500, 1024, 200) == [0]
    assert window_origins(3000, 1024, 200) == [0, 824, 1648, 1976]
    for length in (1025, 2047, 4000):
        starts = window_origins(length, 512, 128)
        assert starts[0] == 0 and starts[-1] + 512 == length
        assert all(b - a <= 512 - 128 for a, b in itertools.pairwise(starts))
    with pytest.raises(ValueError, match="gap"):
        window_origins(100, 64, 64)


def test_patch_names() -> None:
    assert patch_name("P0706", 1.0, 824, 0) == "P0706__1__824___0"
    assert parse_patch_name("P0706__0.5__12___300.png") == ("P0706", 0.5, 12, 300)
    assert parse_patch_name("a__b__1__2___3") == ("a__b", 1.0, 2, 3)
    with pytest.raises(ValueError, match="not a patch name"):
        parse_patch_name("P0706")


def check_round_trip(
    image: np.ndarray, labels: DotaLabels, name: str, patch: int, gap: int, rates: tuple
) -> None:
    patches = [p for r in rates for p in split_image(image, labels, name, patch, gap, rate=r)]
    # Patch pixels are the (rescaled) image pixels at the window.
    first = next(p for p in patches if p.rate == 1.0)
    assert np.array_equal(first.image[:20, :20], image[first.y : first.y + 20, first.x : first.x + 20])
    assert all(p.image.shape[:2] == (patch, patch) for p in patches)
    # Treat the patch objects as detections: whole objects score 1, cut ones their visible fraction.
    dets = {
        p.name: (
            torch.from_numpy(p.labels.polygons),
            torch.from_numpy(np.where(p.truncated, p.iof * 0.9, 1.0)),
            torch.from_numpy(p.labels.labels(DOTA_V1_0_CLASSES)),
        )
        for p in patches
    }
    merged = merge_patch_detections(dets, iou_threshold=0.1)[name]
    # Distinct objects overlap far less than the merge threshold, so all of them must come back once.
    gt_boxes = labels.obbs()
    mutual = box_iou_rotated(gt_boxes, gt_boxes).fill_diagonal_(0)
    assert mutual.max() < 0.1
    assert len(merged.boxes) == len(labels)
    match = box_iou_rotated(gt_boxes, merged.boxes).argmax(dim=1)
    assert len(set(match.tolist())) == len(labels)
    # Each object's merged box is the object itself (checked with shapely) with its class.
    iou = box_iou_rotated_shapely(gt_boxes, merged.boxes[match], aligned=True)
    assert (iou > 1 - 1e-6).all(), np.sort(iou)[:5]
    assert np.array_equal(merged.labels[match].numpy(), labels.labels(DOTA_V1_0_CLASSES))


def test_split_and_merge_p0706_default_windows(data_dir: Path) -> None:
    image, labels = load(data_dir, "P0706")
    patches = split_image(image, labels, "P0706")  # 1024 with 200 overlap: 2 x 2 windows
    assert [(p.x, p.y) for p in patches] == [(0, 0), (87, 0), (0, 158), (87, 158)]
    check_round_trip(image, labels, "P0706", 1024, 200, (1.0, 0.5))


def test_split_and_merge_p1888_small_windows(data_dir: Path) -> None:
    image, labels = load(data_dir, "P1888")
    check_round_trip(image, labels, "P1888", 256, 64, (1.0,))


def test_truncated_objects_follow_the_iof_rule(data_dir: Path) -> None:
    image, labels = load(data_dir, "P0706")
    shapes = shapely.polygons(labels.polygons.reshape(-1, 4, 2))
    for patch in split_image(image, labels, "P0706", 512, 128, iof_threshold=0.6):
        window = shapely.box(patch.x, patch.y, patch.x + 512, patch.y + 512)
        iof = shapely.area(shapely.intersection(shapes, window)) / shapely.area(shapes)
        # Exactly the objects with enough of their area inside are kept (independent recount).
        assert len(patch.labels) == int((iof >= 0.6).sum())
        assert np.allclose(np.sort(patch.iof), np.sort(iof[iof >= 0.6]))
        # Kept parts lie inside the window and inside their object.
        cut = patch.labels.polygons[patch.truncated]
        assert (cut >= -1e-6).all() and (cut <= 512 + 1e-6).all()
        cut_shapes = shapely.polygons(cut.reshape(-1, 4, 2) + np.array([patch.x, patch.y]))
        whole = shapes[iof >= 0.6][np.flatnonzero(patch.truncated)]
        assert (shapely.area(shapely.difference(cut_shapes, whole)) < 1e-6).all()
        assert (shapely.area(cut_shapes) > 0.5 * shapely.area(whole)).all()
        assert patch.truncated.sum() == int(((iof >= 0.6) & (iof < 1 - 1e-9)).sum())


def test_split_dataset_writes_patches(tmp_path: Path, data_dir: Path) -> None:
    report = split_dataset(data_dir / "dota-samples", tmp_path / "split", patch_size=512, gap=200)
    assert report.images == 2 and report.objects == 600
    images = sorted((tmp_path / "split" / "images").glob("*.png"))
    labels = sorted((tmp_path / "split" / "labelTxt").glob("*.txt"))
    assert [p.stem for p in images] == [p.stem for p in labels] and len(images) == report.patches
    written = [read_labels(p) for p in labels]
    assert sum(len(w) for w in written) == report.instances_written
    assert report.objects_in_no_patch == sum(report.per_image_lost.values())
    with Image.open(images[0]) as img:
        assert img.size == (512, 512)
    assert "objects in no patch" in str(report)
    assert not list((tmp_path / "split").rglob("*.tmp"))


def test_merge_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(K, 5\) or \(K, 8\)"):
        merge_patch_detections({"P1__1__0___0": (torch.zeros(2, 4), torch.zeros(2), torch.zeros(2))})
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        merge_patch_detections([("P1__1__0___0", torch.zeros(2, 5), torch.zeros(1), torch.zeros(2))])
    merged = merge_patch_detections(
        {"P1__0.5__100___50": (torch.tensor([[10.0, 20.0, 8.0, 4.0, 0.3]]), torch.ones(1), torch.zeros(1))}
    )
    assert torch.allclose(merged["P1"].boxes, torch.tensor([[220.0, 140.0, 16.0, 8.0, 0.3]]))
