"""DOTA-format detection samples for training and evaluation: image + oriented boxes per item.

A dataset folder holds ``images/`` and ``labelTxt/`` (as :func:`~rsvit.data.detection.split.split_dataset`
writes patches, or whole images). Every item is a dict:

* ``image``: ``(C, H, W)`` float tensor, RGB scaled to ``[0, 1]`` then normalised by ``mean`` / ``std``;
* ``boxes``: ``(N, 5)`` float32 le90 ``(cx, cy, w, h, angle)`` in pixels, fitted to the (moved) corners;
* ``polygons``: ``(N, 8)`` float64 corners (the ground truth the DOTA metric compares with);
* ``labels``: ``(N,)`` int64 indices into the configured classes; ``difficult``: ``(N,)`` bool;
* ``path``: the image file, ``image_id``: its stem, ``image_size``: ``(H, W)`` (after any resize);
* ``scale_factor``: ``(sx, sy)`` from the file's pixels to the item's (``(1, 1)`` without resize).

Labels are DOTA ``labelTxt`` files, or HRSC2016 XML annotations (``label_format="hrsc"``, e.g.
``image_dir="AllImages"``, ``label_dir="Annotations"``): their rotated boxes ``mbox_cx, mbox_cy, mbox_w,
mbox_h, mbox_ang`` become DOTA corner polygons of the single configured class. Images that are not
split into patches (HRSC2016) can be resized as the official pipelines do (``resize=(1333, 800)``: the
largest scale that fits the long side in 1333 and the short side in 800, aspect ratio kept, bilinear);
boxes move with the image and ``scale_factor`` maps detections back to the file's pixels.

Objects whose class is not configured raise a ``ValueError`` naming the classes and the file
(``unknown_classes="skip"`` drops them instead, e.g. to train on a subset of DOTA's classes). Objects
whose fitted box has a side below ``min_size`` pixels are dropped, as the official pipeline ignores
objects under 2 px. Patches without objects are kept unless ``keep_empty=False``: they only add
background terms to the losses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torch.utils.data import Dataset

from rsvit.data.detection.labels import DotaLabels, pair_images_and_labels, read_hrsc2016_xml, read_labels
from rsvit.structures.rotated_boxes import poly_to_obb

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DotaDetectionDataset",
    "detection_collate",
    "read_hrsc_as_dota",
    "rescaled_size",
]

IMAGENET_MEAN = IMAGENET_DEFAULT_MEAN
IMAGENET_STD = IMAGENET_DEFAULT_STD

UnknownClasses = Literal["raise", "skip"]
LabelFormat = Literal["dota", "hrsc"]
Augment = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of an image file (grey and RGBA images are converted)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def rescaled_size(height: int, width: int, resize: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` of an image resized to fit ``resize = (long, short)`` with its aspect ratio kept.

    The scale is the largest one that keeps the long side within ``max(resize)`` and the short side
    within ``min(resize)``; sides are rounded half up, as mmcv's ``rescale_size`` does.
    """
    if len(resize) != 2 or min(resize) <= 0:
        raise ValueError(f"resize must be two positive sizes (long, short), got {list(resize)}")
    scale = min(max(resize) / max(height, width), min(resize) / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def read_hrsc_as_dota(path: str | os.PathLike[str], class_name: str) -> DotaLabels:
    """An HRSC2016 XML annotation as DOTA labels (corner polygons of the le90 boxes, one class)."""
    labels = read_hrsc2016_xml(path).to_dota(class_name)
    labels.source = str(path)
    return labels


class DotaDetectionDataset(Dataset):
    """Images and DOTA labels of one folder (see the module docstring).

    Args:
        root: folder with ``image_dir`` and ``label_dir``.
        classes: the configured class names; labels are indices into this list.
        image_dir, label_dir: sub-folder names.
        unknown_classes: ``"raise"`` on objects of other classes, or ``"skip"`` them.
        keep_empty: keep images without (usable) objects.
        min_size: objects with a fitted side at or below this many pixels are dropped.
        mean, std: per-channel normalisation in ``[0, 1]`` units.
        augment: called as ``augment(image, polygons)`` on training items (flips, quarter turns).
        label_format: ``"dota"`` (``labelTxt/*.txt``) or ``"hrsc"`` (HRSC2016 ``*.xml``; needs exactly
            one configured class, which every object gets).
        resize: ``(long, short)`` to resize every image to (aspect ratio kept), or ``None``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        classes: Sequence[str],
        image_dir: str = "images",
        label_dir: str = "labelTxt",
        unknown_classes: UnknownClasses = "raise",
        keep_empty: bool = True,
        min_size: float = 2.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: Augment | None = None,
        label_format: LabelFormat = "dota",
        resize: Sequence[int] | None = None,
    ) -> None:
        if label_format not in ("dota", "hrsc"):
            raise ValueError(f"label_format must be 'dota' or 'hrsc', got {label_format!r}")
        if label_format == "hrsc" and len(classes) != 1:
            raise ValueError(
                "HRSC2016 annotations are read as one class (ship); configure exactly one class, "
                f"got {list(classes)}"
            )
        if resize is not None:
            rescaled_size(1, 1, resize)  # checks the values
        if unknown_classes not in ("raise", "skip"):
            raise ValueError(f"unknown_classes must be 'raise' or 'skip', got {unknown_classes!r}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
        self.root = Path(root)
        self.classes = [str(c) for c in classes]
        if not self.classes:
            raise ValueError("give the class names (classes: [...])")
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.min_size = float(min_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.augment = augment
        self.resize = None if resize is None else tuple(int(v) for v in resize)
        self.labels: list[DotaLabels] = []
        self.images: list[Path] = []
        unknown: dict[str, str] = {}
        suffix = ".xml" if label_format == "hrsc" else ".txt"
        for image, label_file in pair_images_and_labels(self.root, image_dir, label_dir, label_suffix=suffix):
            assert image is not None
            if label_format == "hrsc":
                labels = read_hrsc_as_dota(label_file, self.classes[0])
            else:
                labels = read_labels(label_file)
            known = np.array([c in self.index for c in labels.classes], dtype=bool)
            for c in set(labels.classes) - set(self.index):
                unknown.setdefault(c, str(label_file))
            labels = labels.select(known)
            if len(labels) or keep_empty:
                self.images.append(image)
                self.labels.append(labels)
        if unknown and unknown_classes == "raise":
            listed = ", ".join(f"{c!r} (e.g. {f})" for c, f in sorted(unknown.items()))
            raise ValueError(
                f"objects of classes not in the configured list in {self.root}: {listed}; the classes are "
                f"{self.classes}. Add them to the classes, or set unknown_classes='skip' to drop them"
            )
        if not self.images:
            raise ValueError(f"no usable images in {self.root} (all empty and keep_empty=False?)")

    def __len__(self) -> int:
        return len(self.images)

    def ground_truth(self, i: int) -> DotaLabels:
        """The labels of item ``i`` as read (configured classes only), for evaluation."""
        return self.labels[i]

    def __getitem__(self, i: int) -> dict[str, Any]:
        labels = self.labels[i]
        image = torch.from_numpy(read_rgb(self.images[i]).copy()).permute(2, 0, 1).float() / 255.0
        polygons = torch.from_numpy(labels.polygons.copy())
        sx = sy = 1.0
        if self.resize is not None:
            height, width = image.shape[-2:]
            new_h, new_w = rescaled_size(height, width, self.resize)
            if (new_h, new_w) != (height, width):
                image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[
                    0
                ]
                sx, sy = new_w / width, new_h / height
                polygons = polygons * torch.tensor([sx, sy], dtype=polygons.dtype).repeat(4)
        if self.augment is not None:
            image, polygons = self.augment(image, polygons)
        boxes = poly_to_obb(polygons, "le90") if len(polygons) else torch.zeros(0, 5, dtype=torch.float64)
        keep = boxes[:, 2:4].amin(-1) > self.min_size
        return {
            "image": (image - self.mean) / self.std,
            "boxes": boxes[keep].float(),
            "polygons": polygons[keep],
            "labels": torch.tensor([self.index[c] for c in labels.classes], dtype=torch.long)[keep],
            "difficult": torch.from_numpy(labels.difficult != 0)[keep],
            "path": str(self.images[i]),
            "image_id": self.images[i].stem,
            "image_size": tuple(image.shape[-2:]),
            "scale_factor": (sx, sy),
        }


def detection_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch: images padded at the right/bottom to a common size and stacked, the rest as lists."""
    height = max(s["image"].shape[-2] for s in samples)
    width = max(s["image"].shape[-1] for s in samples)
    images = torch.zeros(len(samples), samples[0]["image"].shape[0], height, width)
    for k, s in enumerate(samples):
        h, w = s["image"].shape[-2:]
        images[k, :, :h, :w] = s["image"]
    batch: dict[str, Any] = {"image": images}
    for key in samples[0]:
        if key != "image":
            batch[key] = [s[key] for s in samples]
    return batch
