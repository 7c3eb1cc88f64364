"""Box coders that turn rotated boxes into regression targets and back.

``MidpointOffsetCoder``
    The oriented-proposal representation of Oriented R-CNN (Xie et al., ICCV 2021). An oriented box
    is described relative to a horizontal anchor by six numbers: the centre and size of its
    enclosing horizontal box, plus two offsets ``Δα`` and ``Δβ`` that place the rotated box's corners
    on the top and right sides of that horizontal box (the bottom and left corners are the mirror
    images through the centre). Decoding gives a parallelogram, which is turned into a rectangle by
    stretching its shorter diagonal to the length of the longer one.
``DeltaXYWHACoder``
    The usual rotated delta coder for a second stage: centre offsets measured along the proposal's own
    axes, log size ratios and an angle difference.

Both follow the conventions of :mod:`rsvit.structures.rotated_boxes` (pixels, ``y`` down, radians).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from rsvit.structures.rotated_boxes import AngleConvention, obb_to_hbox, obb_to_poly, regularize_obb

__all__ = ["DeltaXYWHACoder", "MidpointOffsetCoder", "parallelogram_to_obb"]

_DEFAULT_CLIP = math.log(1000.0 / 16)


def _norm(deltas: Tensor, means: Sequence[float], stds: Sequence[float]) -> Tensor:
    m = deltas.new_tensor(means)
    s = deltas.new_tensor(stds)
    return (deltas - m) / s


def _denorm(deltas: Tensor, means: Sequence[float], stds: Sequence[float]) -> Tensor:
    return deltas * deltas.new_tensor(stds) + deltas.new_tensor(means)


def parallelogram_to_obb(polys: Tensor, convention: AngleConvention = "le90") -> Tensor:
    """Rectangle from a parallelogram by extending its shorter diagonal to the longer one's length.

    Args:
        polys: ``(..., 8)`` parallelograms ``(x1, y1, ..., x4, y4)`` with vertices in order around the shape.
        convention: angle convention of the result.

    Returns:
        ``(..., 5)`` rotated boxes ``(cx, cy, w, h, angle)``, differentiable. The rectangle shares the
        parallelogram's centre and diagonal directions; both of its diagonals have the longer length.
    """
    p = polys.unflatten(-1, (4, 2))
    center = p.mean(-2)
    d1 = p[..., 0, :] - p[..., 2, :]
    d2 = p[..., 1, :] - p[..., 3, :]
    n1 = torch.linalg.vector_norm(d1, dim=-1, keepdim=True)
    n2 = torch.linalg.vector_norm(d2, dim=-1, keepdim=True)
    tiny = torch.finfo(p.dtype).tiny
    u1 = d1 / n1.clamp(min=tiny)
    u2 = d2 / n2.clamp(min=tiny)
    half = torch.maximum(n1, n2) / 2
    side_w = half * (u2 - u1)  # from corner 1 to corner 2 of the rectangle
    side_h = -half * (u1 + u2)  # from corner 2 to corner 3
    w = torch.linalg.vector_norm(side_w, dim=-1)
    h = torch.linalg.vector_norm(side_h, dim=-1)
    angle = torch.atan2(side_w[..., 1], side_w[..., 0])
    out = torch.stack([center[..., 0], center[..., 1], w, h, angle], dim=-1)
    return regularize_obb(out, convention)


class MidpointOffsetCoder:
    """Encode rotated boxes against horizontal anchors with Oriented R-CNN's midpoint offsets.

    Deltas are ``(dx, dy, dw, dh, da, db)``: ``dx = (x - ax) / aw``, ``dy = (y - ay) / ah``,
    ``dw = log(w / aw)``, ``dh = log(h / ah)`` for the target's enclosing horizontal box ``(x, y, w, h)``,
    ``da = Δα / w`` with ``Δα`` the x offset from the centre of the corner touching the top side, and
    ``db = Δβ / h`` with ``Δβ`` the y offset from the centre of the corner touching the right side.
    Deltas are then normalised by ``means`` and ``stds``.

    The rules follow the official Oriented R-CNN code (OBBDetection), so its checkpoints and training
    targets carry over: at encoding, every corner within ``corner_band`` pixels (absolute) of the top
    side competes for the top vertex and the rightmost wins; likewise the lowest corner within the band
    of the right side is the right vertex. At decoding, ``da`` and ``db`` are clamped to ``[-0.5, 0.5]``
    (after ``dw``/``dh`` are clamped to ``±wh_clip``).
    """

    def __init__(
        self,
        means: Sequence[float] = (0.0,) * 6,
        stds: Sequence[float] = (1.0,) * 6,
        wh_clip: float = _DEFAULT_CLIP,
        convention: AngleConvention = "le90",
        corner_band: float = 0.1,
    ) -> None:
        if len(means) != 6 or len(stds) != 6:
            raise ValueError("means and stds need six values each")
        self.means, self.stds = tuple(means), tuple(stds)
        self.wh_clip = wh_clip
        self.convention = convention
        self.corner_band = corner_band

    def encode(self, anchors: Tensor, targets: Tensor) -> Tensor:
        """Regression targets ``(N, 6)`` for horizontal anchors ``(N, 4)`` and rotated targets ``(N, 5)``.

        Anchors are ``(x1, y1, x2, y2)``; targets are ``(cx, cy, w, h, angle)`` in any angle convention.
        """
        if anchors.shape[:-1] != targets.shape[:-1] or anchors.shape[-1] != 4 or targets.shape[-1] != 5:
            raise ValueError(
                "expected anchors (N, 4) and targets (N, 5), "
                f"got {tuple(anchors.shape)}, {tuple(targets.shape)}"
            )
        ax = (anchors[..., 0] + anchors[..., 2]) / 2
        ay = (anchors[..., 1] + anchors[..., 3]) / 2
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        x1, y1, x2, y2 = obb_to_hbox(targets).unbind(-1)
        x, y, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        pts = obb_to_poly(targets).unflatten(-1, (4, 2))
        xs, ys = pts[..., 0], pts[..., 1]
        # Corners within a fixed 0.1 px of the top (right) side count as touching it, and the rightmost
        # (lowest) of them is used: a nearly horizontal side then gives da = db = +0.5 instead of a value
        # that jumps between corners with float noise. The band is absolute, as in the official coder.
        band = self.corner_band
        on_top = (ys - ys.min(-1, keepdim=True).values).abs() <= band
        on_right = (xs - xs.max(-1, keepdim=True).values).abs() <= band
        top_x = torch.where(on_top, xs, torch.full_like(xs, -math.inf)).max(-1).values
        right_y = torch.where(on_right, ys, torch.full_like(ys, -math.inf)).max(-1).values
        tiny = torch.finfo(pts.dtype).tiny
        deltas = torch.stack(
            [
                (x - ax) / aw,
                (y - ay) / ah,
                torch.log(w.clamp(min=tiny) / aw),
                torch.log(h.clamp(min=tiny) / ah),
                (top_x - x) / w.clamp(min=tiny),
                (right_y - y) / h.clamp(min=tiny),
            ],
            dim=-1,
        )
        return _norm(deltas, self.means, self.stds)

    def decode_polygons(self, anchors: Tensor, deltas: Tensor) -> Tensor:
        """The decoded parallelograms ``(N, 8)`` before they are turned into rectangles."""
        if anchors.shape[:-1] != deltas.shape[:-1] or anchors.shape[-1] != 4 or deltas.shape[-1] != 6:
            raise ValueError(
                "expected anchors (N, 4) and deltas (N, 6), "
                f"got {tuple(anchors.shape)}, {tuple(deltas.shape)}"
            )
        d = _denorm(deltas, self.means, self.stds)
        dx, dy, dw, dh, da, db = d.unbind(-1)
        dw = dw.clamp(-self.wh_clip, self.wh_clip)
        dh = dh.clamp(-self.wh_clip, self.wh_clip)
        ax = (anchors[..., 0] + anchors[..., 2]) / 2
        ay = (anchors[..., 1] + anchors[..., 3]) / 2
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        x, y = ax + dx * aw, ay + dy * ah
        w, h = aw * torch.exp(dw), ah * torch.exp(dh)
        # Offsets beyond half the box would put the corners outside the enclosing box.
        alpha, beta = da.clamp(-0.5, 0.5) * w, db.clamp(-0.5, 0.5) * h
        return torch.stack(
            [x + alpha, y - h / 2, x + w / 2, y + beta, x - alpha, y + h / 2, x - w / 2, y - beta], dim=-1
        )

    def decode(self, anchors: Tensor, deltas: Tensor) -> Tensor:
        """Rotated boxes ``(N, 5)`` from horizontal anchors ``(N, 4)`` and deltas ``(N, 6)``.

        The parallelogram's vertices are pushed out from its centre to the longest vertex distance,
        which makes a rectangle; its angle is that of the first side (top vertex to right vertex) and
        its size the extent of the vertices along that side and across it. Flat parallelograms (two
        vertices on top of each other) thus give the enclosing horizontal box, as in the official code.
        """
        p = self.decode_polygons(anchors, deltas).unflatten(-1, (4, 2))
        center = p.mean(-2, keepdim=True)
        offsets = p - center
        radius = torch.linalg.vector_norm(offsets, dim=-1, keepdim=True)
        longest = radius.amax(-2, keepdim=True)
        rect = offsets * (longest / radius.clamp(min=torch.finfo(p.dtype).tiny))
        side = rect[..., 1, :] - rect[..., 0, :]
        angle = torch.atan2(side[..., 1], side[..., 0])
        cos, sin = torch.cos(angle).unsqueeze(-1), torch.sin(angle).unsqueeze(-1)
        along = rect[..., 0] * cos + rect[..., 1] * sin
        across = rect[..., 1] * cos - rect[..., 0] * sin
        w = along.amax(-1) - along.amin(-1)
        h = across.amax(-1) - across.amin(-1)
        out = torch.stack([center[..., 0, 0], center[..., 0, 1], w, h, angle], dim=-1)
        return regularize_obb(out, self.convention)


def _wrap(angle: Tensor) -> Tensor:
    """Angle into ``[-pi/2, pi/2)``: rectangles repeat every half turn."""
    return torch.remainder(angle + math.pi / 2, math.pi) - math.pi / 2


class DeltaXYWHACoder:
    """Encode rotated boxes against rotated proposals.

    Deltas are ``(dx, dy, dw, dh, da)``: the centre offset rotated into the proposal's frame and divided
    by its ``w`` and ``h``, ``log`` size ratios, and the angle difference in radians. The target is
    written in whichever of its equivalent parameterisations (``w``/``h`` swapped with a quarter turn,
    or a half turn) has the angle closest to the proposal's, so ``da`` lies in ``[-pi/4, pi/4]`` and
    nearly identical boxes never get distant targets. Deltas are then normalised by ``means``/``stds``.
    """

    def __init__(
        self,
        means: Sequence[float] = (0.0,) * 5,
        stds: Sequence[float] = (1.0,) * 5,
        wh_clip: float = _DEFAULT_CLIP,
        convention: AngleConvention = "le90",
    ) -> None:
        if len(means) != 5 or len(stds) != 5:
            raise ValueError("means and stds need five values each")
        self.means, self.stds = tuple(means), tuple(stds)
        self.wh_clip = wh_clip
        self.convention = convention

    def encode(self, proposals: Tensor, targets: Tensor) -> Tensor:
        """Regression targets ``(N, 5)`` for rotated proposals ``(N, 5)`` and rotated targets ``(N, 5)``."""
        if proposals.shape != targets.shape or proposals.shape[-1] != 5:
            raise ValueError(
                f"expected two (N, 5) tensors, got {tuple(proposals.shape)}, {tuple(targets.shape)}"
            )
        px, py, pw, ph, pa = proposals.unbind(-1)
        gx, gy, gw, gh, ga = targets.unbind(-1)
        da_same = _wrap(ga - pa)
        da_swap = _wrap(ga + math.pi / 2 - pa)
        swap = da_swap.abs() < da_same.abs()
        tw, th = torch.where(swap, gh, gw), torch.where(swap, gw, gh)
        da = torch.where(swap, da_swap, da_same)
        cos, sin = torch.cos(pa), torch.sin(pa)
        ox, oy = gx - px, gy - py
        deltas = torch.stack(
            [
                (ox * cos + oy * sin) / pw,
                (-ox * sin + oy * cos) / ph,
                torch.log(tw / pw),
                torch.log(th / ph),
                da,
            ],
            dim=-1,
        )
        return _norm(deltas, self.means, self.stds)

    def decode(self, proposals: Tensor, deltas: Tensor) -> Tensor:
        """Rotated boxes ``(N, 5)`` (in the coder's convention) from proposals and deltas, both ``(N, 5)``."""
        if proposals.shape != deltas.shape or proposals.shape[-1] != 5:
            raise ValueError(
                f"expected two (N, 5) tensors, got {tuple(proposals.shape)}, {tuple(deltas.shape)}"
            )
        d = _denorm(deltas, self.means, self.stds)
        dx, dy, dw, dh, da = d.unbind(-1)
        dw = dw.clamp(-self.wh_clip, self.wh_clip)
        dh = dh.clamp(-self.wh_clip, self.wh_clip)
        px, py, pw, ph, pa = proposals.unbind(-1)
        cos, sin = torch.cos(pa), torch.sin(pa)
        lx, ly = dx * pw, dy * ph
        out = torch.stack(
            [
                px + lx * cos - ly * sin,
                py + lx * sin + ly * cos,
                pw * torch.exp(dw),
                ph * torch.exp(dh),
                pa + da,
            ],
            dim=-1,
        )
        return regularize_obb(out, self.convention)
