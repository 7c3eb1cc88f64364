"""Cut large DOTA images into overlapping patches and merge patch detections back.

Windows of ``patch_size`` pixels start every ``patch_size - gap`` pixels; the last window along each
axis is moved back to end at the image border, so every pixel is covered and neighbouring windows
overlap by at least ``gap`` (images smaller than a patch get one window, padded). Multi-scale splits
resize the image by each ``rate`` first. Patch names follow the DOTA convention
``<image>__<rate>__<x>___<y>`` so detections can be mapped back by name alone.

An object is kept in a patch when at least ``iof_threshold`` of its area lies inside the window
(intersection over foreground). Objects cut by the window border are replaced by the part inside:
that part's polygon if it still has four corners, otherwise the largest quadrilateral on its corners.
"""

from __future__ import annotations

import io
import itertools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
import torch
from PIL import Image

from rsvit.data.detection.labels import (
    DotaLabels,
    pair_images_and_labels,
    read_labels,
    write_labels,
)
from rsvit.ops.rotated_nms import batched_nms_rotated
from rsvit.ops.windows import stride_starts
from rsvit.structures.rotated_boxes import obb_to_poly, poly_to_obb
from rsvit.utils.atomic import atomic_write_bytes

__all__ = [
    "MergedDetections",
    "Patch",
    "SplitReport",
    "merge_patch_detections",
    "parse_patch_name",
    "patch_name",
    "split_dataset",
    "split_image",
    "window_origins",
]

_NAME_RE = re.compile(r"^(?P<image>.+)__(?P<rate>[0-9.eE+-]+)__(?P<x>-?\d+)___(?P<y>-?\d+)$")


def window_origins(length: int, patch_size: int, gap: int) -> list[int]:
    """Start offsets of the windows along one axis of ``length`` pixels."""
    if patch_size <= 0 or not 0 <= gap < patch_size:
        raise ValueError(f"need patch_size > 0 and 0 <= gap < patch_size, got {patch_size} and {gap}")
    return stride_starts(length, patch_size, patch_size - gap)


def patch_name(image: str, rate: float, x: int, y: int) -> str:
    """DOTA-style patch name, e.g. ``P0706__1__824___0``."""
    return f"{image}__{rate:g}__{x}___{y}"


def parse_patch_name(name: str) -> tuple[str, float, int, int]:
    """``(image, rate, x, y)`` from a patch name made by :func:`patch_name` (suffix ignored)."""
    stem = Path(name).stem if Path(name).suffix.lower() in (".png", ".jpg", ".txt", ".tif") else name
    m = _NAME_RE.match(stem)
    if m is None:
        raise ValueError(f"{name!r} is not a patch name of the form <image>__<rate>__<x>___<y>")
    return m["image"], float(m["rate"]), int(m["x"]), int(m["y"])


@dataclass
class Patch:
    """One window of a (possibly rescaled) image.

    Attributes:
        name: patch name (see :func:`patch_name`). x, y: window origin in the rescaled image.
        rate: scale factor applied to the original image.
        image: ``(patch_size, patch_size, C)`` array, padded at the right/bottom when needed.
        labels: objects in patch coordinates. truncated: ``(N,)`` bool, object cut by the window.
        iof: ``(N,)`` fraction of each object's area inside the window.
    """

    name: str
    x: int
    y: int
    rate: float
    image: np.ndarray
    labels: DotaLabels
    truncated: np.ndarray
    iof: np.ndarray


@dataclass
class SplitReport:
    """Counts from a split, so nothing disappears unnoticed."""

    images: int = 0
    patches: int = 0
    empty_patches_skipped: int = 0
    objects: int = 0
    instances_written: int = 0
    truncated_instances: int = 0
    objects_in_no_patch: int = 0
    per_image_lost: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"{self.images} images -> {self.patches} patches ({self.empty_patches_skipped} empty skipped); "
            f"{self.objects} objects -> {self.instances_written} instances "
            f"({self.truncated_instances} truncated); {self.objects_in_no_patch} objects in no patch"
        )


def _resize(image: np.ndarray, rate: float) -> np.ndarray:
    if rate == 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * rate)), max(1, round(h * rate)))
    squeeze = image.ndim == 3 and image.shape[2] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image)
    out = np.asarray(pil.resize(size, Image.Resampling.BILINEAR))
    return out[..., None] if squeeze else out


def _four_corners(part: shapely.Geometry) -> np.ndarray:
    """8 numbers for the clipped part of an object that stay inside it (and so inside the window).

    The part of a convex quadrilateral inside a window is convex with up to 8 corners. If it has 4
    they are used as they are; otherwise the 4 of its corners spanning the largest area (in their
    order along the outline), which is the closest quadrilateral that does not stick out.
    """
    part = shapely.simplify(part, 0.0)
    if not isinstance(part, shapely.Polygon):
        part = shapely.convex_hull(part)
    if isinstance(part, shapely.Polygon) and not part.is_empty:
        ring = np.asarray(part.exterior.coords)[:-1]
    else:
        ring = np.asarray(shapely.get_coordinates(part), dtype=np.float64)
    if len(ring) > 4:
        combos = np.array(list(itertools.combinations(range(len(ring)), 4)))
        quads = ring[combos]  # (C, 4, 2), corners in outline order
        x, y = quads[..., 0], quads[..., 1]
        area = np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))
        ring = quads[int(area.argmax())]
    elif len(ring) < 4:
        ring = (
            np.concatenate([ring, np.repeat(ring[-1:], 4 - len(ring), axis=0)])
            if len(ring)
            else np.zeros((4, 2))
        )
    x, y = ring[:, 0], ring[:, 1]
    if (x * np.roll(y, -1) - np.roll(x, -1) * y).sum() < 0:
        ring = ring[::-1]  # keep the clockwise-on-screen order of the labels
    return ring.reshape(-1)


def split_image(
    image: np.ndarray,
    labels: DotaLabels,
    name: str,
    patch_size: int = 1024,
    gap: int = 200,
    rate: float = 1.0,
    iof_threshold: float = 0.7,
    pad_value: int | float = 0,
    keep_empty: bool = True,
) -> list[Patch]:
    """Split one image and its objects into patches.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array.
        labels: objects in the image's pixel coordinates.
        name: image name used in patch names.
        patch_size: window side in pixels (of the rescaled image).
        gap: minimum overlap of neighbouring windows in pixels (of the rescaled image).
        rate: rescale factor applied first.
        iof_threshold: minimum fraction of an object's area inside a window for it to be kept there.
        pad_value: fill value for windows that reach past a small image.
        keep_empty: also return windows without objects.
    """
    if image.ndim == 2:
        image = image[..., None]
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if not 0 < iof_threshold <= 1:
        raise ValueError(f"iof_threshold must be in (0, 1], got {iof_threshold}")
    scaled = _resize(image, rate)
    height, width = scaled.shape[:2]
    polys = labels.polygons * rate
    shapes = shapely.polygons(polys.reshape(-1, 4, 2))
    shapes = np.where(shapely.is_valid(shapes), shapes, shapely.make_valid(shapes))
    areas = shapely.area(shapes)
    patches = []
    for y in window_origins(height, patch_size, gap):
        for x in window_origins(width, patch_size, gap):
            window = shapely.box(x, y, x + patch_size, y + patch_size)
            inter = shapely.intersection(shapes, window)
            inside = np.where(areas > 0, shapely.area(inter) / np.where(areas > 0, areas, 1.0), 0.0)
            keep = np.flatnonzero(inside >= iof_threshold)
            if not keep.size and not keep_empty:
                continue
            whole = inside[keep] >= 1 - 1e-9
            out_polys = np.empty((len(keep), 8))
            for row, (k, is_whole) in enumerate(zip(keep, whole, strict=True)):
                out_polys[row] = polys[k] if is_whole else _four_corners(inter[k])
            out_polys -= np.tile([x, y], 4)
            crop = np.full((patch_size, patch_size, scaled.shape[2]), pad_value, dtype=scaled.dtype)
            part = scaled[y : y + patch_size, x : x + patch_size]
            crop[: part.shape[0], : part.shape[1]] = part
            sub = labels.select(keep)
            sub.polygons = out_polys
            sub.issues = []
            patches.append(
                Patch(patch_name(name, rate, x, y), x, y, rate, crop, sub, ~whole, inside[keep].copy())
            )
    return patches


def _encode_png(image: np.ndarray) -> bytes:
    arr = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def split_dataset(
    src_root: str | os.PathLike[str],
    dst_root: str | os.PathLike[str],
    patch_size: int = 1024,
    gap: int = 200,
    rates: Sequence[float] = (1.0,),
    iof_threshold: float = 0.7,
    classes: Sequence[str] | None = None,
    keep_empty: bool = False,
    image_dir: str = "images",
    label_dir: str = "labelTxt",
) -> SplitReport:
    """Split every image of a DOTA-style folder into ``dst_root/{images,labelTxt}/<patch>.{png,txt}``.

    Labels are read strictly (a bad line raises with its file and line); files are written atomically.
    Returns a :class:`SplitReport` with object counts, including objects that no patch kept.
    """
    report = SplitReport()
    dst = Path(dst_root)
    for image_path, label_path in pair_images_and_labels(src_root, image_dir, label_dir):
        assert image_path is not None
        labels = read_labels(label_path, classes=classes)
        with Image.open(image_path) as img:
            image = np.asarray(img)
        report.images += 1
        report.objects += len(labels)
        seen = np.zeros(len(labels), dtype=bool)
        # Map patch objects back to source objects through their row in the source labels.
        for rate in rates:
            indexed = DotaLabels(labels.polygons, [str(i) for i in range(len(labels))], labels.difficult)
            for patch in split_image(
                image, indexed, image_path.stem, patch_size, gap, rate, iof_threshold, keep_empty=True
            ):
                rows = np.array([int(c) for c in patch.labels.classes], dtype=np.int64)
                seen[rows] = True
                if not len(rows) and not keep_empty:
                    report.empty_patches_skipped += 1
                    continue
                out = DotaLabels(
                    patch.labels.polygons,
                    [labels.classes[r] for r in rows],
                    labels.difficult[rows],
                    image_source=labels.image_source,
                    gsd=None if labels.gsd is None else labels.gsd / rate,
                )
                atomic_write_bytes(dst / "images" / f"{patch.name}.png", _encode_png(patch.image))
                write_labels(dst / "labelTxt" / f"{patch.name}.txt", out)
                report.patches += 1
                report.instances_written += len(rows)
                report.truncated_instances += int(patch.truncated.sum())
        lost = int((~seen).sum())
        report.objects_in_no_patch += lost
        if lost:
            report.per_image_lost[image_path.stem] = lost
    return report


@dataclass
class MergedDetections:
    """Detections of one full image after merging its patches.

    Attributes:
        boxes: ``(N, 5)`` float tensor ``(cx, cy, w, h, angle)`` in original-image pixels.
        scores: ``(N,)``. labels: ``(N,)`` int64 class indices.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    @property
    def polygons(self) -> torch.Tensor:
        """``(N, 8)`` corner polygons of :attr:`boxes`."""
        return obb_to_poly(self.boxes)


def merge_patch_detections(
    detections: Mapping[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    | Iterable[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]],
    iou_threshold: float = 0.1,
) -> dict[str, MergedDetections]:
    """Map patch detections to full-image coordinates and remove duplicates with per-class rotated NMS.

    Args:
        detections: per patch name, ``(boxes, scores, labels)`` with boxes either ``(K, 5)`` rotated
            boxes or ``(K, 8)`` polygons in patch pixels, ``(K,)`` scores and ``(K,)`` integer labels.
            Either a mapping from patch name or an iterable of ``(name, boxes, scores, labels)``.
        iou_threshold: NMS threshold within a class (0.1 is the usual value for DOTA merging).

    Returns:
        Per original image name, the merged :class:`MergedDetections` (sorted by decreasing score).
    """
    entries = [(n, *v) for n, v in detections.items()] if isinstance(detections, Mapping) else detections
    grouped: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
    for name, boxes, scores, labels in entries:
        image, rate, x, y = parse_patch_name(name)
        boxes = torch.as_tensor(boxes)
        if boxes.dim() != 2 or boxes.shape[-1] not in (5, 8):
            raise ValueError(f"{name}: boxes must be (K, 5) or (K, 8), got {tuple(boxes.shape)}")
        if boxes.shape[-1] == 8:
            boxes = poly_to_obb(boxes)
        shift = boxes.new_tensor([x, y])
        full = torch.cat([(boxes[:, :2] + shift) / rate, boxes[:, 2:4] / rate, boxes[:, 4:]], dim=1)
        scores = torch.as_tensor(scores, device=boxes.device)
        labels = torch.as_tensor(labels, device=boxes.device).long()
        if not (len(full) == len(scores) == len(labels)):
            raise ValueError(f"{name}: {len(full)} boxes, {len(scores)} scores and {len(labels)} labels")
        grouped.setdefault(image, []).append((full, scores, labels))
    merged = {}
    for image, parts in grouped.items():
        boxes = torch.cat([p[0] for p in parts])
        scores = torch.cat([p[1] for p in parts])
        labels = torch.cat([p[2] for p in parts])
        keep = batched_nms_rotated(boxes, scores, labels, iou_threshold)
        merged[image] = MergedDetections(boxes[keep], scores[keep], labels[keep])
    return merged
