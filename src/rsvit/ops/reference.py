"""Slow, obviously-correct shapely implementations of the rotated box ops.

They exist to validate the tensor implementations (tests) and as the baseline they are timed
against (``benchmarks/rotated_nms.py``). They work on CPU NumPy data in float64.
"""

from __future__ import annotations

import numpy as np
import shapely
import torch
from torch import Tensor

from rsvit.structures.rotated_boxes import obb_to_poly

__all__ = ["box_iou_rotated_shapely", "nms_rotated_shapely", "obb_to_shapely"]


def obb_to_shapely(boxes: Tensor | np.ndarray) -> np.ndarray:
    """``(N,)`` array of shapely polygons for ``(N, 5)`` rotated boxes."""
    t = torch.as_tensor(boxes, dtype=torch.float64).cpu()
    corners = obb_to_poly(t).reshape(-1, 4, 2).numpy()
    return shapely.polygons(corners)


def box_iou_rotated_shapely(
    boxes1: Tensor | np.ndarray, boxes2: Tensor | np.ndarray, aligned: bool = False
) -> np.ndarray:
    """``(N, M)`` (``(N,)`` if ``aligned``) float64 IoU of rotated boxes via shapely (0 for empty unions)."""
    p1, p2 = obb_to_shapely(boxes1), obb_to_shapely(boxes2)
    if not aligned:
        p1, p2 = p1[:, None], p2[None, :]
    inter = shapely.area(shapely.intersection(p1, p2))
    union = shapely.area(p1) + shapely.area(p2) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms_rotated_shapely(
    boxes: Tensor | np.ndarray,
    scores: Tensor | np.ndarray,
    iou_threshold: float,
    idxs: Tensor | np.ndarray | None = None,
    use_tree: bool = True,
    max_kept: int | None = None,
) -> np.ndarray:
    """Textbook greedy NMS: walk boxes by decreasing score, keep one, drop what overlaps it too much.

    Args:
        boxes: ``(N, 5)`` rotated boxes.
        scores: ``(N,)``.
        iou_threshold: a box whose IoU with a kept box of its category exceeds this is dropped.
        idxs: optional ``(N,)`` categories; boxes of different categories never suppress each other.
        use_tree: find overlap candidates with a shapely ``STRtree`` (fast); otherwise compare each
            kept box with every remaining box.
        max_kept: stop after this many kept boxes (lets benchmarks time a prefix of a slow run).

    Returns:
        int64 array of kept indices in decreasing score order (stable for ties).
    """
    polys = obb_to_shapely(boxes)
    s = np.asarray(torch.as_tensor(scores).detach().cpu().numpy(), dtype=np.float64)
    cats = None if idxs is None else np.asarray(torch.as_tensor(idxs).cpu().numpy())
    order = np.argsort(-s, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    areas = shapely.area(polys)
    alive = np.ones(len(polys), dtype=bool)
    tree = shapely.STRtree(polys) if use_tree else None
    keep: list[int] = []
    for i in order:
        if not alive[i]:
            continue
        keep.append(int(i))
        alive[i] = False
        if max_kept is not None and len(keep) >= max_kept:
            break
        cand = tree.query(polys[i]) if tree is not None else np.arange(len(polys))
        cand = cand[alive[cand] & (rank[cand] > rank[i])]
        if cats is not None:
            cand = cand[cats[cand] == cats[i]]
        if cand.size == 0:
            continue
        inter = shapely.area(shapely.intersection(polys[i], polys[cand]))
        union = areas[i] + areas[cand] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        alive[cand[iou > iou_threshold]] = False
    return np.asarray(keep, dtype=np.int64)
