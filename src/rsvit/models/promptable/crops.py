"""Point grids and crop boxes of SAM's automatic mask generator.

Crop layer 0 is the whole image; layer ``i`` cuts ``2**i × 2**i`` overlapping crops, listed with the
x offset in the outer loop. Each layer prompts with its own regular point grid, whose density can be
reduced per layer.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["build_all_layer_point_grids", "build_point_grid", "generate_crop_boxes"]


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``(n², 2)`` cell centres (x, y) of an ``n × n`` grid over [0, 1]², row by row, x fastest."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer ``0..n_layers``: ``int(n_per_side / scale_per_layer**i)`` points a side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes ``[x0, y0, x1, y1]`` of every layer and the layer index of each.

    Args:
        im_size: image ``(H, W)``.
        n_layers: crop layers beyond the whole image.
        overlap_ratio: overlap of neighbouring crops as a fraction of the short side (at layer 1).
    """
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes: list[list[int]] = [[0, 0, im_w, im_h]]
    layers = [0]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = _crop_length(im_w, per_side, overlap)
        crop_h = _crop_length(im_h, per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0 in x0s:
            for y0 in y0s:
                boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
                layers.append(layer)
    return boxes, layers


def _crop_length(length: int, n_crops: int, overlap: int) -> int:
    return math.ceil((overlap * (n_crops - 1) + length) / n_crops)
