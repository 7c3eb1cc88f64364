"""DOTA detection dataset and box-moving augmentation: boxes checked against hand-transformed ones."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rsvit.data.detection.datasets import DotaDetectionDataset, detection_collate
from rsvit.data.detection.labels import DOTA_V1_0_CLASSES
from rsvit.data.detection.split import split_dataset
from rsvit.data.detection.transforms import DetectionAugment, hflip, rot90, vflip
from rsvit.structures.rotated_boxes import obb_to_poly, poly_to_obb

W, H = 100, 80


def _setup(box: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """A W x H image lit inside one le90 box (sampled at pixel centres), and the box's corners."""
    image = torch.zeros(1, H, W)
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    cx, cy, w, h, a = box
    u = (xs - cx) * math.cos(a) + (ys - cy) * math.sin(a)
    v = -(xs - cx) * math.sin(a) + (ys - cy) * math.cos(a)
    image[0][(u.abs() < w / 2 - 1) & (v.abs() < h / 2 - 1)] = 1.0
    return image, obb_to_poly(torch.tensor([box], dtype=torch.float64))


def _lit_centre(image: torch.Tensor) -> tuple[float, float]:
    ys, xs = torch.nonzero(image[0] > 0, as_tuple=True)
    return float(xs.double().mean() + 0.5), float(ys.double().mean() + 0.5)


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        (hflip, [W - 30.0, 20.0, 40.0, 10.0, -0.3]),
        (vflip, [30.0, H - 20.0, 40.0, 10.0, -0.3]),
        (lambda im, p: rot90(im, p, 1), [20.0, W - 30.0, 40.0, 10.0, 0.3 - math.pi / 2]),
        (lambda im, p: rot90(im, p, 2), [W - 30.0, H - 20.0, 40.0, 10.0, 0.3]),
        (lambda im, p: rot90(im, p, 3), [H - 20.0, 30.0, 40.0, 10.0, 0.3 - math.pi / 2]),
    ],
)
def test_transform_moves_box_with_image(op, expected) -> None:
    image, polys = _setup([30.0, 20.0, 40.0, 10.0, 0.3])
    out_image, out_polys = op(image, polys)
    box = poly_to_obb(out_polys, "le90")[0]
    assert torch.allclose(box, torch.tensor(expected, dtype=torch.float64), atol=1e-6), box
    # the lit pixels (the object in the image) moved to the new box centre
    cx, cy = _lit_centre(out_image)
    assert abs(cx - expected[0]) < 0.6 and abs(cy - expected[1]) < 0.6


def test_rot90_changes_image_shape_and_four_turns_are_identity() -> None:
    image, polys = _setup([30.0, 20.0, 40.0, 10.0, 0.3])
    turned, _ = rot90(image, polys, 1)
    assert turned.shape == (1, W, H)
    back, back_polys = rot90(image, polys, 4)
    assert torch.equal(back, image) and torch.allclose(back_polys, polys)


def test_augment_probabilities_checked_and_applied() -> None:
    with pytest.raises(ValueError, match="hflip"):
        DetectionAugment(hflip=1.5)
    image, polys = _setup([30.0, 20.0, 40.0, 10.0, 0.3])
    out, out_polys = DetectionAugment(hflip=1.0, vflip=0.0, rot90=0.0)(image, polys)
    ref, ref_polys = hflip(image, polys)
    assert torch.equal(out, ref) and torch.equal(out_polys, ref_polys)


def _write_folder(root: Path, lines: dict[str, list[str]]) -> None:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    for stem, rows in lines.items():
        Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        (root / "labelTxt" / f"{stem}.txt").write_text("\n".join(rows) + "\n")


def test_dataset_labels_unknown_classes_and_empty(tmp_path: Path) -> None:
    rows = {
        "a": ["10 10 40 10 40 20 10 20 plane 0", "5 30 25 30 25 50 5 50 ship 1", "1 1 3 1 3 3 1 3 ship 0"],
        "b": ["10 10 40 10 40 20 10 20 tree 0"],
        "c": [],
    }
    _write_folder(tmp_path, rows)
    with pytest.raises(ValueError, match=r"'tree'.*unknown_classes='skip'"):
        DotaDetectionDataset(tmp_path, ["plane", "ship"])
    ds = DotaDetectionDataset(tmp_path, ["plane", "ship"], unknown_classes="skip")
    assert len(ds) == 3  # empty images kept
    a = ds[0]
    assert a["image_id"] == "a" and a["image"].shape == (3, 64, 64)
    # the 2x2 px object is dropped (min_size 2), the others keep label and difficult flag
    assert a["labels"].tolist() == [0, 1] and a["difficult"].tolist() == [False, True]
    assert torch.allclose(a["boxes"][0], torch.tensor([25.0, 15.0, 30.0, 10.0, 0.0]))
    assert torch.allclose(a["boxes"][1], torch.tensor([15.0, 40.0, 20.0, 20.0, a["boxes"][1, 4].item()]))
    mean = torch.tensor([0.485, 0.456, 0.406])
    std = torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(a["image"][:, 0, 0], (128 / 255 - mean) / std)
    assert ds[1]["boxes"].shape == (0, 5)
    assert len(DotaDetectionDataset(tmp_path, ["plane", "ship"], "images", "labelTxt", "skip", False)) == 1
    batch = detection_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 64, 64) and len(batch["boxes"]) == 2


def test_dataset_on_real_dota_patches(data_dir: Path, tmp_path: Path) -> None:
    report = split_dataset(data_dir / "dota-samples", tmp_path, patch_size=256, gap=32)
    ds = DotaDetectionDataset(tmp_path, DOTA_V1_0_CLASSES, augment=DetectionAugment(1.0, 1.0, 1.0))
    assert len(ds) == report.patches > 0
    sample = ds[0]
    h, w = sample["image"].shape[-2:]
    assert (h, w) == (256, 256) and len(sample["boxes"]) == len(sample["labels"])
    boxes = sample["boxes"]
    assert ((boxes[:, 2] >= boxes[:, 3]) & (boxes[:, 4] >= -math.pi / 2) & (boxes[:, 4] < math.pi / 2)).all()


HRSC_OBJECT = """  <HRSC_Object>
    <Class_ID>100000002</Class_ID><difficult>{difficult}</difficult>
    <mbox_cx>{cx}</mbox_cx><mbox_cy>{cy}</mbox_cy><mbox_w>{w}</mbox_w><mbox_h>{h}</mbox_h>
    <mbox_ang>{a}</mbox_ang>
  </HRSC_Object>"""


def _write_hrsc(root: Path, stem: str, size: tuple[int, int], objects: list[dict]) -> None:
    from PIL import Image

    width, height = size
    (root / "AllImages").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = 200  # left half bright: shows where the resize put it
    Image.fromarray(pixels).save(root / "AllImages" / f"{stem}.bmp")
    body = "\n".join(HRSC_OBJECT.format(**o) for o in objects)
    (root / "Annotations" / f"{stem}.xml").write_text(
        f"<HRSC_Image><Img_ID>{stem}</Img_ID><Img_SizeWidth>{width}</Img_SizeWidth>"
        f"<Img_SizeHeight>{height}</Img_SizeHeight><HRSC_Objects>{body}</HRSC_Objects></HRSC_Image>"
    )


def test_hrsc_annotations_are_read_as_dota_and_resized(tmp_path: Path) -> None:
    from rsvit.datamodules.detection import DetectionDataModule

    objects = [
        {"cx": 50.0, "cy": 40.0, "w": 60.0, "h": 16.0, "a": 0.4, "difficult": 0},
        {"cx": 120.0, "cy": 70.0, "w": 10.0, "h": 30.0, "a": -1.0, "difficult": 1},
    ]
    _write_hrsc(tmp_path / "trainval", "100000001", (160, 100), objects)
    dm = DetectionDataModule(
        str(tmp_path), "trainval", "trainval", classes=["ship"], label_format="hrsc", resize=[80, 64]
    )
    item = dm.dataset("val")[0]
    # (160, 100) fits (80, 64) at scale 0.5: long side 80, short side 50
    assert item["image_size"] == (50, 80) and item["scale_factor"] == (0.5, 0.5)
    assert item["image"].shape == (3, 50, 80)
    assert item["image"][0, :, 39].mean() > item["image"][0, :, 41].mean()  # the bright half is the left one
    raw = torch.tensor([[o[k] for k in ("cx", "cy", "w", "h", "a")] for o in objects], dtype=torch.float64)
    expected = obb_to_poly(raw) * 0.5
    # the same rectangles at half size, in le90
    assert torch.allclose(obb_to_poly(poly_to_obb(item["polygons"], "le90")), item["polygons"], atol=1e-9)

    def same_corners(a: torch.Tensor, b: torch.Tensor) -> bool:
        return all(
            torch.cdist(p.view(4, 2), q.view(4, 2)).min(dim=1).values.max() < 1e-9
            for p, q in zip(a, b, strict=True)
        )

    assert same_corners(item["polygons"], expected)
    assert item["labels"].tolist() == [0, 0] and item["difficult"].tolist() == [False, True]
    assert item["boxes"][:, 2:4].amax(-1).tolist() == pytest.approx([30.0, 15.0])
    # the evaluation ground truth stays in the file's pixels
    truth = torch.from_numpy(dm.dataset("val").ground_truth(0).polygons)
    assert same_corners(truth, obb_to_poly(raw))
    assert (dm.hparams.image_dir, dm.hparams.label_dir) == ("AllImages", "Annotations")

    with pytest.raises(ValueError, match="exactly one class"):
        DotaDetectionDataset(
            tmp_path / "trainval", ["ship", "boat"], "AllImages", "Annotations", label_format="hrsc"
        )
    with pytest.raises(ValueError, match="not split into patches"):
        DetectionDataModule(str(tmp_path), label_format="hrsc", patch_size=512, classes=["ship"])
    with pytest.raises(ValueError, match="two positive sizes"):
        DotaDetectionDataset(
            tmp_path / "trainval", ["ship"], "AllImages", "Annotations", label_format="hrsc", resize=[0]
        )
