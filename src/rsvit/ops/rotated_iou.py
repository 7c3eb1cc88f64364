"""Exact intersection, IoU and IoF of rotated boxes, vectorised over box pairs.

The intersection of two rectangles is a convex polygon whose vertices are drawn from three sets:
corners of the first box inside the second, corners of the second inside the first, and crossings
of their edges. Working in the frame of the second box (where it is axis-aligned and centred at the
origin) makes every inside test and edge crossing a comparison against ``±w/2`` or ``±h/2``, which
keeps the arithmetic short and well conditioned. The up-to-24 candidate points of each pair are
ordered by angle around their mean and their area is taken with the shoelace formula, all as batched
tensor operations. Gradients flow to the box parameters through the point coordinates.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = ["box_iou_rotated", "rotated_box_intersection"]

# Pairs processed at once. Peak memory is a few hundred bytes per pair; on CPU, chunks that fit in the
# allocator's cache avoid fresh pages for every temporary, which is much faster than larger chunks.
_PAIR_CHUNK_CPU = 1 << 14
_PAIR_CHUNK_CUDA = 1 << 18


def _rotate(x: Tensor, y: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    return x * cos - y * sin, x * sin + y * cos


def _safe_div(num: Tensor, den: Tensor, tiny: float) -> tuple[Tensor, Tensor]:
    ok = den.abs() > tiny
    return num / torch.where(ok, den, torch.ones_like(den)), ok


def _intersection_aligned(b1: Tensor, b2: Tensor) -> Tensor:
    """Intersection areas of matching rows of ``b1`` and ``b2`` (both ``(P, 5)``)."""
    dtype = b1.dtype
    rel_eps = 2e-6 if dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-9
    x1, y1, w1, h1, a1 = b1.unbind(-1)
    x2, y2, w2, h2, a2 = b2.unbind(-1)
    hw1, hh1, hw2, hh2 = w1 / 2, h1 / 2, w2 / 2, h2 / 2
    scale = torch.maximum(torch.maximum(w1, h1), torch.maximum(w2, h2)).detach()
    tol = (rel_eps * scale).unsqueeze(-1) + torch.finfo(dtype).tiny

    # Box 1 expressed in the frame of box 2.
    c2, s2 = torch.cos(a2), torch.sin(a2)
    dx, dy = _rotate(x1 - x2, y1 - y2, c2, -s2)
    rel = a1 - a2
    cr, sr = torch.cos(rel), torch.sin(rel)
    sx = torch.tensor([-1.0, 1.0, 1.0, -1.0], dtype=dtype, device=b1.device)
    sy = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=dtype, device=b1.device)
    lx, ly = sx * hw1.unsqueeze(-1), sy * hh1.unsqueeze(-1)  # (P, 4) corners of box 1 in its own frame
    rx, ry = _rotate(lx, ly, cr.unsqueeze(-1), sr.unsqueeze(-1))
    px, py = rx + dx.unsqueeze(-1), ry + dy.unsqueeze(-1)  # corners of box 1 in box 2's frame

    hw2e, hh2e = hw2.unsqueeze(-1), hh2.unsqueeze(-1)
    in2 = (px.abs() <= hw2e + tol) & (py.abs() <= hh2e + tol)

    # Corners of box 2 (axis-aligned here) and whether they lie inside box 1.
    qx, qy = sx * hw2e, sy * hh2e
    ux, uy = _rotate(qx - dx.unsqueeze(-1), qy - dy.unsqueeze(-1), cr.unsqueeze(-1), -sr.unsqueeze(-1))
    in1 = (ux.abs() <= hw1.unsqueeze(-1) + tol) & (uy.abs() <= hh1.unsqueeze(-1) + tol)

    # Crossings of box 1's edges with the four lines x = ±w2/2, y = ±h2/2 (each (P, 4 edges, 2 lines)).
    ex0, ey0 = px, py
    ex1, ey1 = px.roll(-1, dims=-1), py.roll(-1, dims=-1)
    ddx, ddy = (ex1 - ex0).unsqueeze(-1), (ey1 - ey0).unsqueeze(-1)
    lines_x = torch.stack([-hw2, hw2], dim=-1).unsqueeze(-2)  # (P, 1, 2)
    lines_y = torch.stack([-hh2, hh2], dim=-1).unsqueeze(-2)
    tiny = torch.finfo(dtype).eps * 1e-3
    tol3 = tol.unsqueeze(-1)
    # A crossing counts if it lies on box 1's edge and on box 2's side (absolute tolerance).
    ex_lo, ex_hi = torch.minimum(ex0, ex1).unsqueeze(-1) - tol3, torch.maximum(ex0, ex1).unsqueeze(-1) + tol3
    ey_lo, ey_hi = torch.minimum(ey0, ey1).unsqueeze(-1) - tol3, torch.maximum(ey0, ey1).unsqueeze(-1) + tol3
    t_v, ok_v = _safe_div(lines_x - ex0.unsqueeze(-1), ddx, tiny)
    yv = ey0.unsqueeze(-1) + t_v * ddy
    xv = lines_x.expand_as(yv)
    valid_v = ok_v & (xv >= ex_lo) & (xv <= ex_hi) & (yv >= ey_lo) & (yv <= ey_hi)
    valid_v &= yv.abs() <= hh2.view(-1, 1, 1) + tol3
    t_h, ok_h = _safe_div(lines_y - ey0.unsqueeze(-1), ddy, tiny)
    xh = ex0.unsqueeze(-1) + t_h * ddx
    yh = lines_y.expand_as(xh)
    valid_h = ok_h & (yh >= ey_lo) & (yh <= ey_hi) & (xh >= ex_lo) & (xh <= ex_hi)
    valid_h &= xh.abs() <= hw2.view(-1, 1, 1) + tol3

    n = b1.shape[0]
    cand_x = torch.cat([px, qx.expand_as(px), xv.reshape(n, -1), xh.reshape(n, -1)], dim=-1)  # (P, 24)
    cand_y = torch.cat([py, qy.expand_as(py), yv.reshape(n, -1), yh.reshape(n, -1)], dim=-1)
    valid = torch.cat([in2, in1, valid_v.reshape(n, -1), valid_h.reshape(n, -1)], dim=-1)

    with torch.no_grad():
        count = valid.sum(-1, keepdim=True).clamp(min=1)
        vf = valid.to(dtype)
        mx = (cand_x * vf).sum(-1, keepdim=True) / count
        my = (cand_y * vf).sum(-1, keepdim=True) / count
        ang = torch.atan2(cand_y - my, cand_x - mx)
        ang = torch.where(valid, ang, torch.full_like(ang, 4 * math.pi))
        order = ang.argsort(dim=-1)
        first_valid = valid.gather(-1, order)
    sx_ = cand_x.gather(-1, order)
    sy_ = cand_y.gather(-1, order)
    # Invalid slots (sorted to the end) repeat the first vertex and so add nothing to the area.
    sx_ = torch.where(first_valid, sx_, sx_[:, :1])
    sy_ = torch.where(first_valid, sy_, sy_[:, :1])
    cross = sx_ * sy_.roll(-1, dims=-1) - sx_.roll(-1, dims=-1) * sy_
    area = 0.5 * cross.sum(-1).abs()
    # Fewer than three distinct vertices: no area (also protects against rounding noise).
    return torch.where(valid.sum(-1) >= 3, area, torch.zeros_like(area))


def rotated_box_intersection(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection area of matching rows of two rotated box tensors.

    Args:
        boxes1: ``(P, 5)`` float tensor ``(cx, cy, w, h, angle)`` (radians, any convention).
        boxes2: ``(P, 5)`` boxes in the same form, row ``i`` intersected with ``boxes1[i]``.

    Returns:
        ``(P,)`` intersection areas, differentiable with respect to both inputs.
    """
    if boxes1.shape != boxes2.shape or boxes1.dim() != 2 or boxes1.shape[-1] != 5:
        raise ValueError(f"expected two (P, 5) tensors, got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    if boxes1.shape[0] == 0:
        return boxes1.new_zeros(0)
    chunk = _PAIR_CHUNK_CUDA if boxes1.is_cuda else _PAIR_CHUNK_CPU
    parts = [
        _intersection_aligned(boxes1[i : i + chunk], boxes2[i : i + chunk])
        for i in range(0, boxes1.shape[0], chunk)
    ]
    return torch.cat(parts)


def _ratio(inter: Tensor, area1: Tensor, area2: Tensor, mode: str) -> Tensor:
    denom = area1 if mode == "iof" else area1 + area2 - inter
    ok = denom > 0
    return torch.where(ok, inter / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(inter))


def box_iou_rotated(
    boxes1: Tensor,
    boxes2: Tensor,
    mode: Literal["iou", "iof"] = "iou",
    aligned: bool = False,
) -> Tensor:
    """Exact IoU (or IoF) between rotated boxes.

    Args:
        boxes1: ``(N, 5)`` float tensor ``(cx, cy, w, h, angle)``, angle in radians (any convention).
        boxes2: ``(M, 5)`` float tensor in the same format, on the same device.
        mode: ``"iou"`` for intersection over union, ``"iof"`` for intersection over the area of the
            ``boxes1`` box (how much of it is covered).
        aligned: if True, ``N == M`` and only matching rows are compared.

    Returns:
        ``(N, M)`` tensor (``(N,)`` if ``aligned``) in ``[0, 1]``, same dtype. Pairs with a zero
        denominator (e.g. two empty boxes) give 0. Pairs whose circumscribed circles do not meet are
        skipped, so sparse scenes cost far less than ``N * M`` exact intersections.
    """
    if mode not in ("iou", "iof"):
        raise ValueError(f"mode must be 'iou' or 'iof', got {mode!r}")
    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        if b.dim() != 2 or b.shape[-1] != 5:
            raise ValueError(f"{name} must have shape (N, 5), got {tuple(b.shape)}")
    area1 = boxes1[:, 2] * boxes1[:, 3]
    area2 = boxes2[:, 2] * boxes2[:, 3]
    if aligned:
        if boxes1.shape[0] != boxes2.shape[0]:
            raise ValueError(
                f"aligned=True needs as many boxes1 as boxes2, got {boxes1.shape[0]} and {boxes2.shape[0]}"
            )
        inter = rotated_box_intersection(boxes1, boxes2)
        return _ratio(inter, area1, area2, mode)

    n, m = boxes1.shape[0], boxes2.shape[0]
    out = boxes1.new_zeros((n, m))
    if n == 0 or m == 0:
        return out
    r1 = 0.5 * torch.hypot(boxes1[:, 2], boxes1[:, 3]).detach()
    r2 = 0.5 * torch.hypot(boxes2[:, 2], boxes2[:, 3]).detach()
    rows_per_chunk = max(1, (1 << 22) // m)
    idx_i, idx_j = [], []
    for start in range(0, n, rows_per_chunk):
        c1 = boxes1[start : start + rows_per_chunk, :2].detach()
        d = torch.cdist(c1, boxes2[:, :2].detach()) if c1.shape[0] else c1.new_zeros((0, m))
        # Generous margin so rounding in cdist never drops a touching pair.
        reach = r1[start : start + rows_per_chunk, None] + r2[None, :]
        near = d <= reach * (1 + 1e-4) + 1e-4
        ii, jj = near.nonzero(as_tuple=True)
        idx_i.append(ii + start)
        idx_j.append(jj)
    ii, jj = torch.cat(idx_i), torch.cat(idx_j)
    if ii.numel() == 0:
        return out
    inter = rotated_box_intersection(boxes1[ii], boxes2[jj])
    vals = _ratio(inter, area1[ii], area2[jj], mode)
    return out.index_put((ii, jj), vals)
