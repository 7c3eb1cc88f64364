"""Operations on binary masks used by the automatic mask generator.

Boxes from masks use inclusive maxima (a one-pixel mask at column 5 has x0 = x1 = 5), run-length
encodings are column-major with the first count a zero run, and connected components are 8-connected
with labels in the order a 2×2-block raster scan meets them (OpenCV's default labelling), which decides
which component survives when every island is below the area threshold.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "batched_mask_to_box",
    "connected_components",
    "mask_to_rle",
    "remove_small_regions",
    "rle_area",
    "rle_to_mask",
    "stability_score",
]


def stability_score(logits: Tensor, threshold: float, offset: float) -> Tensor:
    """IoU between the masks thresholded at ``threshold ± offset``, per mask of ``(..., H, W)`` logits.

    An empty union gives NaN, as in the official code.
    """
    inner = (logits > threshold + offset).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    outer = (logits > threshold - offset).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    return inner / outer


def batched_mask_to_box(masks: Tensor) -> Tensor:
    """XYXY int64 boxes with inclusive maxima of ``(..., H, W)`` boolean masks; empty masks give zeros."""
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.int64, device=masks.device)
    shape = masks.shape
    h, w = shape[-2:]
    masks = masks.reshape(-1, h, w)
    rows = masks.any(dim=-1)
    cols = masks.any(dim=-2)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    bottom = (rows * ys).amax(dim=-1)
    top = (rows * ys + h * ~rows).amin(dim=-1)
    right = (cols * xs).amax(dim=-1)
    left = (cols * xs + w * ~cols).amin(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    empty = (right < left) | (bottom < top)
    boxes = boxes * (~empty).unsqueeze(-1)
    return boxes.reshape(*shape[:-2], 4)


def mask_to_rle(mask: np.ndarray | Tensor) -> dict:
    """Uncompressed COCO-style RLE: ``{"size": [h, w], "counts": [...]}``, column-major, zero run first."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    flat = mask.T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [h, w], "counts": counts}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Inverse of :func:`mask_to_rle`."""
    h, w = rle["size"]
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, rle["counts"])
    return flat.reshape(w, h).T.copy()


def rle_area(rle: dict) -> int:
    """Foreground pixel count of an RLE (sum of its odd runs)."""
    return int(sum(rle["counts"][1::2]))


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a boolean ``(H, W)`` mask.

    Returns:
        labels ``(H, W)`` int64 (0 = background, components 1..n) and sizes ``(n,)``. Component order is
        that of a raster scan over 2×2 blocks (block rows, then block columns).
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int64)
    if not mask.any():
        return labels, np.zeros(0, dtype=np.int64)
    # Runs of foreground pixels along each row, numbered in row-major order.
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    start_r, start_c = np.nonzero(edges == 1)
    _, end_c = np.nonzero(edges == -1)
    n_runs = start_r.size
    run_of = np.full((h, w), -1, dtype=np.int64)
    run_of[mask] = np.repeat(np.arange(n_runs), end_c - start_c)
    # Runs touching between consecutive rows (vertically or diagonally) belong together.
    pairs = []
    for dc in (-1, 0, 1):
        upper = run_of[:-1, max(0, -dc) : w - max(0, dc)]
        lower = run_of[1:, max(0, dc) : w - max(0, -dc)]
        both = (upper >= 0) & (lower >= 0)
        pairs.append(upper[both] * n_runs + lower[both])
    links = np.unique(np.concatenate(pairs))
    root = _merge(n_runs, links // n_runs, links % n_runs)
    # Order components by the first 2x2 block that holds one of their pixels.
    block_key = (start_r // 2) * ((w + 1) // 2) + start_c // 2
    comp_ids, comp_of_run = np.unique(root, return_inverse=True)
    first_block = np.full(comp_ids.size, np.iinfo(np.int64).max)
    np.minimum.at(first_block, comp_of_run, block_key)
    order = np.argsort(first_block, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    run_label = rank[comp_of_run] + 1
    labels[mask] = run_label[run_of[mask]]
    sizes = np.bincount(run_label, weights=end_c - start_c, minlength=comp_ids.size + 1)[1:].astype(np.int64)
    return labels, sizes


def _merge(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest member index of each node's component (min-label propagation with pointer jumping)."""
    label = np.arange(n)
    while True:
        new = label.copy()
        np.minimum.at(new, a, label[b])
        np.minimum.at(new, b, label[a])
        while True:
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            return label
        label = new


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill small holes (``mode="holes"``) or drop small islands (``"islands"``) of a boolean mask.

    Regions with fewer than ``area_thresh`` pixels count as small. When every island is small, the
    largest one is kept. Returns the new mask and whether anything was small (the official "changed").
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    working = ~mask if holes else mask
    labels, sizes = connected_components(working)
    small = np.flatnonzero(sizes < area_thresh) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return np.isin(labels, np.concatenate([[0], small])), True
    keep = np.setdiff1d(np.arange(1, sizes.size + 1), small)
    if keep.size == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, keep), True
