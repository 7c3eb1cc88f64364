"""Greedy non-maximum suppression for rotated boxes, without compiled extensions.

Greedy NMS keeps a box unless a higher-scoring kept box overlaps it with IoU above the threshold.
Instead of a Python loop over boxes this implementation works on the overlap graph:

1. Candidate pairs come from the boxes' axis-aligned extents: boxes are listed in the horizontal
   strips they span and, within a strip, swept along x (sorted by left edge, a box only meets boxes
   whose left edge comes before its right edge). Pairs in different categories, or whose extents
   cannot give an IoU above the threshold, are dropped.
2. Greedy NMS keeps a box iff no higher-scoring *kept* box overlaps it too much. This is resolved in
   rounds of batched updates over the candidate pairs: boxes whose remaining higher-scoring
   candidates are all suppressed are kept; then the exact rotated IoU is computed (in bounded
   chunks) only for candidate pairs that start at a kept box, suppressing the boxes they overlap
   and discarding the others. Pairs between boxes that are suppressed anyway are never evaluated.
   The number of rounds follows the length of the longest suppression chain, small for detector
   output.

Everything stays on the input device; memory is bounded by the chunk sizes, not by ``N**2``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rsvit.ops.rotated_iou import rotated_box_intersection
from rsvit.structures.rotated_boxes import obb_to_hbox

__all__ = ["batched_nms_rotated", "multiclass_nms_rotated", "nms_rotated", "rotated_overlap_pairs"]

# Candidate pairs screened per step of the sweep.
_SWEEP_CHUNK = 1 << 18


def _candidate_pairs(boxes: Tensor, iou_threshold: float, idxs: Tensor | None) -> tuple[Tensor, Tensor]:
    """Pairs ``a < b`` that may have IoU above the threshold (a superset of the pairs that do)."""
    device = boxes.device
    n = boxes.shape[0]
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if n < 2:
        return empty, empty
    hb = obb_to_hbox(boxes).double()
    ext = hb[:, 2:] - hb[:, :2]
    margin = 1e-4 * ext.max() + 1e-6
    x1, y1, x2, y2 = hb[:, 0] - margin, hb[:, 1] - margin, hb[:, 2] + margin, hb[:, 3] + margin
    if idxs is not None:
        # Categories side by side along x for the sweep: boxes of different categories (detector
        # output repeats each box once per class) then never meet. Only the sweep keys move; the
        # IoU bound below uses differences within one category, where the shift cancels.
        shift = (idxs - idxs.min()).double() * (float((x2.max() - x1.min()).item()) + 1.0)
        x1, x2 = x1 + shift, x2 + shift
    # Horizontal strips about twice the typical box height; a box is listed in every strip it spans.
    ymin = y1.min()
    strip_h = (2 * ext[:, 1].median()).clamp(min=1.0)
    s_lo = torch.floor((y1 - ymin) / strip_h).long()
    s_hi = torch.floor((y2 - ymin) / strip_h).long()
    reps = s_hi - s_lo + 1
    box_of = torch.arange(n, device=device).repeat_interleave(reps)
    first = torch.cumsum(reps, 0) - reps
    strip_of = s_lo[box_of] + torch.arange(box_of.numel(), device=device) - first.repeat_interleave(reps)
    # Within a strip, sweep along x: sort by (strip, left edge) via one float64 key.
    xmin = x1.min()
    span = float((x2.max() - xmin).item()) + 1.0
    key_lo = strip_of.double() * span + (x1[box_of] - xmin)
    key_hi = strip_of.double() * span + (x2[box_of] - xmin)
    by_key = torch.argsort(key_lo, stable=True)
    box_sorted, strip_sorted, lo_sorted = box_of[by_key], strip_of[by_key], key_lo[by_key]
    r = box_sorted.numel()
    end = torch.searchsorted(lo_sorted, key_hi[by_key], right=True)
    counts = (end - torch.arange(1, r + 1, device=device)).clamp(min=0)
    cum = torch.cumsum(counts, 0)
    total = int(cum[-1])
    area64 = (boxes[:, 2] * boxes[:, 3]).double()
    out_i, out_j = [empty], [empty]
    start = 0
    while start < r and total > 0:
        base = int(cum[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(cum, torch.tensor(base + _SWEEP_CHUNK, device=device), right=True))
        stop = min(max(stop, start + 1), r)
        c = counts[start:stop]
        m = int(c.sum())
        if m:
            pos = torch.arange(start, stop, device=device).repeat_interleave(c)
            first = torch.cumsum(c, 0) - c
            partner = pos + 1 + torch.arange(m, device=device) - first.repeat_interleave(c)
            a, b = box_sorted[pos], box_sorted[partner]
            # Each overlapping pair is counted once: in the strip holding the top of their overlap.
            top = torch.maximum(y1[a], y1[b])
            keep = (top <= torch.minimum(y2[a], y2[b])) & (
                torch.floor((top - ymin) / strip_h).long() == strip_sorted[pos]
            )
            if idxs is not None:
                keep &= idxs[a] == idxs[b]
            a, b = a[keep], b[keep]
            # Upper bound of the IoU from the overlap of the axis-aligned extents; skip hopeless pairs.
            iw = (torch.minimum(x2[a], x2[b]) - torch.maximum(x1[a], x1[b])).clamp(min=0)
            ih = (torch.minimum(y2[a], y2[b]) - torch.maximum(y1[a], y1[b])).clamp(min=0)
            u = torch.minimum(iw * ih, torch.minimum(area64[a], area64[b]))
            bound_union = area64[a] + area64[b] - u
            bound = torch.where(bound_union > 0, u / bound_union.clamp(min=1e-300), 1.0)
            keep = bound * (1 + 1e-4) + 1e-9 > iou_threshold
            a, b = a[keep], b[keep]
            out_i.append(torch.minimum(a, b))
            out_j.append(torch.maximum(a, b))
        start = stop
    return torch.cat(out_i), torch.cat(out_j)


def _pair_iou(boxes: Tensor, a: Tensor, b: Tensor) -> Tensor:
    area = boxes[:, 2] * boxes[:, 3]
    inter = rotated_box_intersection(boxes[a], boxes[b])
    union = area[a] + area[b] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def rotated_overlap_pairs(
    boxes: Tensor,
    iou_threshold: float,
    idxs: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """All pairs ``i < j`` of rotated boxes with IoU strictly above ``iou_threshold``.

    Args:
        boxes: ``(N, 5)`` float tensor ``(cx, cy, w, h, angle)``, angle in radians (any convention).
        iou_threshold: pairs with IoU ``> iou_threshold`` are returned; must be ``>= 0``.
        idxs: optional ``(N,)`` integer tensor; only pairs with equal ``idxs`` are considered.

    Returns:
        ``(i, j, iou)``: two ``(E,)`` int64 tensors with ``i < j`` and the ``(E,)`` IoU values.
    """
    if iou_threshold < 0:
        raise ValueError(f"iou_threshold must be >= 0, got {iou_threshold}")
    boxes = boxes.detach()
    a, b = _candidate_pairs(boxes, iou_threshold, idxs)
    iou = _pair_iou(boxes, a, b)
    hit = iou > iou_threshold
    return a[hit], b[hit], iou[hit]


def _greedy(boxes: Tensor, src: Tensor, dst: Tensor, iou_threshold: float) -> Tensor:
    """Keep mask of greedy NMS for boxes in priority order, given candidate pairs ``src < dst``."""
    n = boxes.shape[0]
    device = boxes.device
    undecided, kept, suppressed = 0, 1, 2
    state = torch.zeros(n, dtype=torch.uint8, device=device)
    while src.numel():
        # A box whose remaining higher-priority candidates are all suppressed is kept.
        blocked = torch.zeros(n, dtype=torch.bool, device=device)
        blocked[dst[state[src] != suppressed]] = True
        state = torch.where((state == undecided) & ~blocked, kept, state)
        # Candidate pairs from a kept box get their exact IoU; overlapping too much suppresses.
        ask = (state[src] == kept) & (state[dst] == undecided)
        if bool(ask.any()):
            a, b = src[ask], dst[ask]
            hit = torch.zeros(n, dtype=torch.bool, device=device)
            hit[b[_pair_iou(boxes, a, b) > iou_threshold]] = True
            state = torch.where((state == undecided) & hit, suppressed, state)
        # Evaluated pairs are done; so are pairs into decided boxes or out of suppressed ones.
        live = ~ask & (state[dst] == undecided) & (state[src] != suppressed)
        src, dst = src[live], dst[live]
    return state != suppressed


@torch.library.custom_op("rsvit::batched_nms_rotated", mutates_args=())
def _batched_nms_rotated_op(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """The eager NMS as one opaque graph node for torch.compile / torch.export."""
    return _batched_nms_rotated_eager(boxes, scores, idxs, iou_threshold)


@_batched_nms_rotated_op.register_fake
def _(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept,), dtype=torch.long)


def batched_nms_rotated(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Greedy rotated NMS applied independently within each category.

    Under ``torch.compile`` / ``torch.export`` the whole NMS is one custom op (``rsvit::batched_nms_rotated``)
    whose output length is data-dependent; the value checks then run when the graph runs.

    Args:
        boxes: ``(N, 5)`` float tensor ``(cx, cy, w, h, angle)``, angle in radians (any convention).
        scores: ``(N,)`` float tensor.
        idxs: ``(N,)`` integer tensor of categories (or images); boxes with different values never
            suppress each other.
        iou_threshold: a box is discarded if it has IoU ``> iou_threshold`` with a kept box of higher
            score in its category.

    Returns:
        int64 tensor of indices of the kept boxes, sorted by decreasing score (ties keep input order).
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 5:
        raise ValueError(f"boxes must have shape (N, 5), got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1] or idxs.shape != boxes.shape[:1]:
        raise ValueError(
            f"scores and idxs must have shape ({boxes.shape[0]},), "
            f"got {tuple(scores.shape)} and {tuple(idxs.shape)}"
        )
    if torch.compiler.is_compiling():
        return _batched_nms_rotated_op(boxes.detach(), scores.detach(), idxs, float(iou_threshold))
    return _batched_nms_rotated_eager(boxes, scores, idxs, iou_threshold)


def _batched_nms_rotated_eager(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    if iou_threshold < 0:
        raise ValueError(f"iou_threshold must be >= 0, got {iou_threshold}")
    if not bool(torch.isfinite(boxes).all()):
        bad = int((~torch.isfinite(boxes).all(dim=1)).sum())
        raise ValueError(f"{bad} of {n} boxes have non-finite coordinates; filter them before NMS")
    order = torch.argsort(scores.detach(), descending=True, stable=True)
    ranked = boxes.detach()[order]
    src, dst = _candidate_pairs(ranked, iou_threshold, idxs[order])
    return order[_greedy(ranked, src, dst, iou_threshold)]


def nms_rotated(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy rotated NMS over all boxes (one category).

    Args:
        boxes: ``(N, 5)`` float tensor ``(cx, cy, w, h, angle)``, angle in radians (any convention).
        scores: ``(N,)`` float tensor.
        iou_threshold: a box is discarded if it has IoU ``> iou_threshold`` with a kept box of higher score.

    Returns:
        int64 tensor of indices of the kept boxes, sorted by decreasing score (ties keep input order).
    """
    idxs = torch.zeros(boxes.shape[0], dtype=torch.long, device=boxes.device)
    return batched_nms_rotated(boxes, scores, idxs, iou_threshold)


def multiclass_nms_rotated(boxes: Tensor, scores: Tensor, iou_threshold: float) -> tuple[Tensor, Tensor]:
    """Per-class greedy rotated NMS when every class scores the same boxes (class-agnostic regression).

    Gives the same result as :func:`batched_nms_rotated` over the ``(box, class)`` candidates listed
    box-major, but the overlaps are found once for the ``R`` boxes instead of once per class, and the
    greedy pass runs over all classes together. Needs an ``R x R`` boolean matrix: meant for the few
    thousand proposals of one image.

    Args:
        boxes: ``(R, 5)`` float tensor ``(cx, cy, w, h, angle)``, finite.
        scores: ``(R, K)`` scores; entries that are not candidates must be ``-inf``.
        iou_threshold: a candidate is discarded if it has IoU ``> iou_threshold`` with a kept candidate
            of the same class and higher score (ties: lower box index first).

    Returns:
        ``(box_index, class_index)`` int64 tensors of the kept candidates, by decreasing score (ties in
        box-major order).
    """
    r, k = scores.shape
    device = boxes.device
    valid = torch.isfinite(scores)
    i, j, _ = rotated_overlap_pairs(boxes, iou_threshold)
    overlap = torch.zeros(r, r, dtype=torch.bool, device=device)
    overlap[i, j] = True
    overlap[j, i] = True
    order = torch.argsort(scores.detach().t(), dim=1, descending=True, stable=True)  # (K, R) per class
    steps = int(valid.sum(0).max()) if r and k else 0
    if device.type == "cpu":
        # Thousands of tiny steps: numpy's per-call cost is a fraction of torch's dispatch.
        kept = torch.from_numpy(_greedy_shared(overlap.numpy(), order.numpy(), (~valid.t()).numpy(), steps))
    else:
        suppressed = ~valid.t()
        kept = torch.zeros(k, r, dtype=torch.bool, device=device)
        classes = torch.arange(k, device=device)
        for step in range(steps):  # the i-th best candidate of every class at once
            rois = order[:, step]
            alive = ~suppressed[classes, rois]
            kept[classes, rois] = alive
            suppressed |= overlap[rois] & alive[:, None]
    box_idx, cls_idx = kept.t().nonzero(as_tuple=True)
    ranked = torch.argsort(scores[box_idx, cls_idx].detach(), descending=True, stable=True)
    return box_idx[ranked], cls_idx[ranked]


def _greedy_shared(overlap: np.ndarray, order: np.ndarray, suppressed: np.ndarray, steps: int) -> np.ndarray:
    """``(K, R)`` keep mask: per class, candidates in ``order`` kept unless a kept one overlaps them."""
    k, r = suppressed.shape
    suppressed = suppressed.copy()
    kept = np.zeros((k, r), dtype=bool)
    classes = np.arange(k)
    for step in range(steps):
        rois = order[:, step]
        alive = ~suppressed[classes, rois]
        kept[classes, rois] = alive
        suppressed |= overlap[rois] & alive[:, None]
    return kept
