"""Target masks and prompts drawn from a label mask, for fine-tuning and evaluating promptable models.

**Which masks are targets** (``objects``):

* ``"components"`` (default): every 8-connected region of one class is one object, as an instance;
  buildings or water bodies in a semantic map become separate targets, like the objects a user prompts.
* ``"classes"``: all pixels of one class form one target (a semantic prompt: "this class here").

Pixels equal to ``ignore_index`` belong to no target and are neither inside nor outside any of them:
they get no points, and losses and metrics leave them out. Targets smaller than ``min_area`` pixels are
dropped (too small to prompt); at most ``max_objects`` are kept per image, drawn at random.
An image without targets (all ignored, or only tiny regions) gives empty arrays, never an error.

**Prompts** follow the pixel convention of :mod:`rsvit.structures.prompts` (x = column, y = row,
centres at integers):

* tight box: ``x0, y0, x1, y1`` = the extreme pixel centres of the mask, so it contains every mask pixel;
* noisy box: each coordinate moved by Gaussian noise with a standard deviation of ``box_noise`` (10 %)
  of the box side along that axis, at most ``max_box_noise`` (20) pixels, then clipped to the image
  (the jitter of the Segment Anything paper);
* points: ``num_positive`` pixels drawn uniformly inside the mask (label 1) and ``num_negative``
  labelled pixels drawn uniformly outside it (label 0); when there are fewer candidates the rest are
  padding points with label -1, which the prompt encoder ignores.

Everything random comes from the ``numpy.random.Generator`` passed in, so a seed fixes the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rsvit.models.promptable.mask_ops import connected_components

__all__ = [
    "ObjectRule",
    "PromptSampler",
    "SampledPrompts",
    "mask_boxes",
    "noisy_boxes",
    "sample_points",
    "target_masks",
]

ObjectRule = Literal["components", "classes"]


def target_masks(
    labels: np.ndarray,
    objects: ObjectRule = "components",
    ignore_index: int = 255,
    classes: tuple[int, ...] | None = None,
    min_area: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The target masks of an ``(H, W)`` label mask (see the module docstring for the rule).

    Args:
        labels: class index per pixel.
        objects: ``"components"`` or ``"classes"``.
        ignore_index: label of unlabelled pixels.
        classes: class indices that may become targets (``None``: every class present).
        min_area: smallest target in pixels.

    Returns:
        ``(masks (N, H, W) bool, class index per mask (N,) int64)``, in class order, then raster order.
    """
    if objects not in ("components", "classes"):
        raise ValueError(f"objects must be 'components' or 'classes', got {objects!r}")
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected an (H, W) label mask, got shape {labels.shape}")
    present = [int(c) for c in np.unique(labels) if int(c) != ignore_index]
    if classes is not None:
        present = [c for c in present if c in set(classes)]
    masks: list[np.ndarray] = []
    owners: list[int] = []
    for cls in present:
        region = labels == cls
        if objects == "classes":
            parts = [region] if region.sum() >= min_area else []
        else:
            ids, sizes = connected_components(region)
            parts = [ids == i + 1 for i in np.flatnonzero(sizes >= min_area)]
        masks.extend(parts)
        owners.extend([cls] * len(parts))
    if not masks:
        return np.zeros((0, *labels.shape), dtype=bool), np.zeros(0, dtype=np.int64)
    return np.stack(masks), np.asarray(owners, dtype=np.int64)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight ``(N, 4)`` boxes (x0, y0, x1, y1; extreme pixel centres) of ``(N, H, W)`` non-empty masks."""
    masks = np.asarray(masks, dtype=bool)
    boxes = np.zeros((masks.shape[0], 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            raise ValueError(f"mask {i} is empty; an empty mask has no box")
        boxes[i] = (cols[0], rows[0], cols[-1], rows[-1])
    return boxes


def noisy_boxes(
    boxes: np.ndarray,
    size: tuple[int, int],
    rng: np.random.Generator,
    noise: float = 0.1,
    max_noise: float = 20.0,
) -> np.ndarray:
    """Boxes with every coordinate jittered (std ``noise`` x side, capped at ``max_noise`` px), in the image.

    ``size`` is the image ``(H, W)``; a box whose corners cross keeps at least one pixel of width.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    sides = np.concatenate([boxes[:, 2:] - boxes[:, :2] + 1.0] * 2, axis=1)
    std = np.minimum(noise * sides, max_noise)
    shift = np.clip(rng.normal(size=boxes.shape) * std, -max_noise, max_noise)
    out = boxes + shift.astype(np.float32)
    h, w = size
    out[:, 0::2] = np.clip(out[:, 0::2], 0, w - 1)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, h - 1)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0])
    out[:, 3] = np.maximum(out[:, 3], out[:, 1])
    return out


def _draw(candidates: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` (x, y) points drawn without replacement from a boolean map (fewer when it has fewer)."""
    ys, xs = np.nonzero(candidates)
    if xs.size == 0 or count <= 0:
        return np.zeros((0, 2), dtype=np.float32)
    pick = rng.choice(xs.size, size=min(count, xs.size), replace=False)
    return np.stack([xs[pick], ys[pick]], axis=1).astype(np.float32)


def sample_points(
    mask: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
    num_positive: int = 1,
    num_negative: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive points inside ``mask`` and negative points in ``valid & ~mask``, then padding.

    Returns ``(coords (P, 2) float32 x/y, labels (P,) int64)`` with ``P = num_positive + num_negative``:
    positives first, then negatives, then padding points (label -1) where candidates ran out.
    """
    mask = np.asarray(mask, dtype=bool)
    positive = _draw(mask, num_positive, rng)
    negative = _draw(np.asarray(valid, dtype=bool) & ~mask, num_negative, rng)
    total = num_positive + num_negative
    pad = total - len(positive) - len(negative)
    coords = np.concatenate([positive, negative, np.zeros((pad, 2), dtype=np.float32)])
    labels = np.concatenate(
        [np.ones(len(positive), np.int64), np.zeros(len(negative), np.int64), np.full(pad, -1, np.int64)]
    )
    return coords, labels


@dataclass
class SampledPrompts:
    """Targets of one image and every kind of prompt for each (``N`` targets, ``P`` points each)."""

    masks: np.ndarray  # (N, H, W) bool
    classes: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) float32, tight
    noisy_boxes: np.ndarray  # (N, 4) float32
    point_coords: np.ndarray  # (N, P, 2) float32
    point_labels: np.ndarray  # (N, P) int64

    def __len__(self) -> int:
        return int(self.masks.shape[0])


@dataclass
class PromptSampler:
    """Draws targets and their prompts from label masks (the rules are in the module docstring).

    Args:
        objects: ``"components"`` or ``"classes"``.
        ignore_index: label of unlabelled pixels.
        classes: class indices that may become targets (``None``: all).
        min_area: smallest target in pixels.
        max_objects: targets kept per image (drawn at random when there are more).
        num_positive, num_negative: points per target inside / outside it.
        box_noise, max_box_noise: jitter of the noisy boxes (fraction of the side, cap in pixels).
    """

    objects: ObjectRule = "components"
    ignore_index: int = 255
    classes: tuple[int, ...] | None = None
    min_area: int = 16
    max_objects: int = 16
    num_positive: int = 1
    num_negative: int = 1
    box_noise: float = 0.1
    max_box_noise: float = 20.0

    def __post_init__(self) -> None:
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if self.num_positive < 1 or self.num_negative < 0:
            raise ValueError(
                f"need num_positive >= 1 and num_negative >= 0, got {self.num_positive}, {self.num_negative}"
            )

    def __call__(self, labels: np.ndarray, rng: np.random.Generator) -> SampledPrompts:
        """Targets and prompts of one ``(H, W)`` label mask."""
        masks, classes = target_masks(
            labels, self.objects, self.ignore_index, self.classes, max(self.min_area, 1)
        )
        if len(masks) > self.max_objects:
            keep = np.sort(rng.choice(len(masks), size=self.max_objects, replace=False))
            masks, classes = masks[keep], classes[keep]
        n, points = len(masks), self.num_positive + self.num_negative
        if n == 0:
            return SampledPrompts(
                masks,
                classes,
                np.zeros((0, 4), np.float32),
                np.zeros((0, 4), np.float32),
                np.zeros((0, points, 2), np.float32),
                np.zeros((0, points), np.int64),
            )
        boxes = mask_boxes(masks)
        jittered = noisy_boxes(boxes, labels.shape, rng, self.box_noise, self.max_box_noise)
        valid = np.asarray(labels) != self.ignore_index
        drawn = [sample_points(m, valid, rng, self.num_positive, self.num_negative) for m in masks]
        return SampledPrompts(
            masks,
            classes,
            boxes,
            jittered,
            np.stack([c for c, _ in drawn]),
            np.stack([lab for _, lab in drawn]),
        )
