"""Rotated box representations, angle conventions and conversions (a data type, no kernels).

Kernels over these boxes (IoU, NMS, RoIAlign, box coders) live in :mod:`rsvit.ops`.

Coordinates are image pixels: ``x`` grows to the right, ``y`` grows downwards.

A rotated box is a row ``(cx, cy, w, h, angle)``. ``angle`` is in radians and rotates the box's
``w`` side from the +x axis towards the +y axis, i.e. clockwise as seen on screen. The corners are
``center + R(angle) @ (±w/2, ±h/2)`` with ``R = [[cos, -sin], [sin, cos]]``.

The same rectangle has many such rows (swap ``w``/``h`` and add a quarter turn, or add a half
turn). An *angle convention* picks one of them:

``le90`` (the default here)
    ``w >= h`` and ``angle`` in ``[-pi/2, pi/2)``: ``w`` is the long side.
``le135``
    ``w >= h`` and ``angle`` in ``[-pi/4, 3*pi/4)``.
``oc``
    ``angle`` in ``(0, pi/2]`` and ``w``/``h`` in whatever order that requires (the convention of
    OpenCV's ``minAreaRect`` before version 4.5.1, expressed in radians).

An *8-point polygon* is a row ``(x1, y1, ..., x4, y4)``. Polygons produced here list the corners in
clockwise order on screen (positive shoelace area with ``y`` down), starting at the corner
``center + R(angle) @ (-w/2, -h/2)``. A *horizontal box* is ``(x1, y1, x2, y2)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

AngleConvention = Literal["le90", "le135", "oc"]
ANGLE_CONVENTIONS: tuple[str, ...] = ("le90", "le135", "oc")

__all__ = [
    "ANGLE_CONVENTIONS",
    "AngleConvention",
    "RotatedBoxes",
    "convert_angle_convention",
    "hbox_to_obb",
    "obb_to_hbox",
    "obb_to_poly",
    "poly_area",
    "poly_to_hbox",
    "poly_to_obb",
    "regularize_obb",
]


def _check_last_dim(t: Tensor, size: int, name: str) -> None:
    if t.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size}), got {tuple(t.shape)}")


def regularize_obb(boxes: Tensor, convention: AngleConvention = "le90") -> Tensor:
    """Rewrite rotated boxes so their ``(w, h, angle)`` follows one angle convention.

    The rectangle described by each row does not change, only its parameterisation, so boxes from
    tools that use another convention can be compared and regressed consistently.

    Args:
        boxes: ``(..., 5)`` float tensor ``(cx, cy, w, h, angle)``, angle in radians, any convention.
        convention: ``"le90"``, ``"le135"`` or ``"oc"`` (see the module docstring).

    Returns:
        ``(..., 5)`` tensor of the same dtype and device.
    """
    _check_last_dim(boxes, 5, "boxes")
    cx, cy, w, h, a = boxes.unbind(-1)
    half_pi = math.pi / 2
    if convention in ("le90", "le135"):
        swap = w < h
        w2 = torch.where(swap, h, w)
        h2 = torch.where(swap, w, h)
        a = a + swap.to(a.dtype) * half_pi
        low = -half_pi if convention == "le90" else -math.pi / 4
        a = torch.remainder(a - low, math.pi) + low
        return torch.stack([cx, cy, w2, h2, a], dim=-1)
    if convention == "oc":
        # Number of quarter turns to subtract so the angle lands in (0, pi/2].
        k = torch.ceil(a / half_pi) - 1
        a = a - k * half_pi
        # Rounding can leave the angle a hair outside the interval.
        a = torch.where(a <= 0, a + half_pi, a)
        k = torch.where(a > half_pi, k + 1, k)
        a = torch.where(a > half_pi, a - half_pi, a)
        swap = torch.remainder(k, 2) == 1
        w2 = torch.where(swap, h, w)
        h2 = torch.where(swap, w, h)
        return torch.stack([cx, cy, w2, h2, a], dim=-1)
    raise ValueError(f"unknown angle convention {convention!r}; expected one of {ANGLE_CONVENTIONS}")


def convert_angle_convention(boxes: Tensor, src: AngleConvention, dst: AngleConvention) -> Tensor:
    """Convert rotated boxes from the ``src`` to the ``dst`` angle convention.

    ``src`` is validated but not otherwise needed: all conventions describe the same rectangles, so
    the conversion is :func:`regularize_obb` into ``dst``. Shapes as in :func:`regularize_obb`.
    """
    if src not in ANGLE_CONVENTIONS:
        raise ValueError(f"unknown angle convention {src!r}; expected one of {ANGLE_CONVENTIONS}")
    return regularize_obb(boxes, dst)


def obb_to_poly(boxes: Tensor) -> Tensor:
    """Corners of rotated boxes as 8-point polygons.

    Args:
        boxes: ``(..., 5)`` tensor ``(cx, cy, w, h, angle)``.

    Returns:
        ``(..., 8)`` tensor ``(x1, y1, ..., x4, y4)``, clockwise on screen, differentiable.
    """
    _check_last_dim(boxes, 5, "boxes")
    cx, cy, w, h, a = boxes.unbind(-1)
    cos, sin = torch.cos(a), torch.sin(a)
    hw, hh = w / 2, h / 2
    dx = torch.stack([-hw, hw, hw, -hw], dim=-1)
    dy = torch.stack([-hh, -hh, hh, hh], dim=-1)
    xs = cx.unsqueeze(-1) + dx * cos.unsqueeze(-1) - dy * sin.unsqueeze(-1)
    ys = cy.unsqueeze(-1) + dx * sin.unsqueeze(-1) + dy * cos.unsqueeze(-1)
    return torch.stack([xs, ys], dim=-1).flatten(-2)


def poly_area(polys: Tensor) -> Tensor:
    """Signed shoelace area of polygons ``(..., 2K)`` -> ``(...)``; positive when clockwise on screen."""
    pts = polys.unflatten(-1, (-1, 2))
    x, y = pts[..., 0], pts[..., 1]
    xn, yn = x.roll(-1, dims=-1), y.roll(-1, dims=-1)
    return 0.5 * (x * yn - xn * y).sum(-1)


def poly_to_obb(polys: Tensor, convention: AngleConvention = "le90") -> Tensor:
    """Minimum-area rotated rectangle enclosing each polygon (or any set of points).

    The minimum-area enclosing rectangle has a side along an edge of the points' convex hull,
    and every hull edge joins two of the points, so trying the direction of every point pair and
    keeping the smallest enclosing rectangle is exact. This needs no hull and no loops.

    Args:
        polys: ``(..., 2K)`` tensor of ``K >= 1`` points ``(x1, y1, ..., xK, yK)``; for DOTA ``K = 4``.
        convention: angle convention of the result.

    Returns:
        ``(..., 5)`` tensor ``(cx, cy, w, h, angle)``. Points that all coincide give ``w = h = 0``.
    """
    if polys.shape[-1] % 2 or polys.shape[-1] == 0:
        raise ValueError(f"polys must have shape (..., 2K), got {tuple(polys.shape)}")
    batch = polys.shape[:-1]
    pts = polys.reshape(-1, polys.shape[-1] // 2, 2)
    n, k, _ = pts.shape
    if n == 0:
        return polys.new_zeros((*batch, 5))
    if k == 1:
        zeros = pts.new_zeros(n)
        out = torch.stack([pts[:, 0, 0], pts[:, 0, 1], zeros, zeros, zeros], dim=-1)
        return regularize_obb(out, convention).reshape(*batch, 5)
    # Work relative to the mean point: translation then cannot change which rectangle wins a near-tie.
    origin = pts.mean(dim=1, keepdim=True).detach()
    pts = pts - origin
    ii, jj = torch.triu_indices(k, k, offset=1, device=pts.device)
    edge = pts[:, jj] - pts[:, ii]  # (n, P, 2)
    # Direction of each candidate edge; the angle of a zero-length edge is 0 (an axis-aligned try).
    theta = torch.atan2(edge[..., 1], edge[..., 0]).detach()
    cos, sin = torch.cos(theta), torch.sin(theta)  # (n, P)
    # Project every point onto each candidate frame: u along the edge, v across it.
    u = pts[:, None, :, 0] * cos[..., None] + pts[:, None, :, 1] * sin[..., None]  # (n, P, K)
    v = -pts[:, None, :, 0] * sin[..., None] + pts[:, None, :, 1] * cos[..., None]
    umin, umax = u.min(-1).values, u.max(-1).values
    vmin, vmax = v.min(-1).values, v.max(-1).values
    area = (umax - umin) * (vmax - vmin)
    best = area.detach().argmin(-1, keepdim=True)

    def pick(t: Tensor) -> Tensor:
        return t.gather(-1, best).squeeze(-1)

    c, s = pick(cos), pick(sin)
    uc, vc = (pick(umin) + pick(umax)) / 2, (pick(vmin) + pick(vmax)) / 2
    w, h = pick(umax) - pick(umin), pick(vmax) - pick(vmin)
    cx = uc * c - vc * s + origin[:, 0, 0]
    cy = uc * s + vc * c + origin[:, 0, 1]
    out = torch.stack([cx, cy, w, h, pick(theta)], dim=-1)
    return regularize_obb(out, convention).reshape(*batch, 5)


def obb_to_hbox(boxes: Tensor) -> Tensor:
    """Axis-aligned boxes ``(..., 4)`` ``(x1, y1, x2, y2)`` tightly enclosing rotated boxes ``(..., 5)``."""
    _check_last_dim(boxes, 5, "boxes")
    cx, cy, w, h, a = boxes.unbind(-1)
    cos, sin = torch.cos(a).abs(), torch.sin(a).abs()
    half_x = (w * cos + h * sin) / 2
    half_y = (w * sin + h * cos) / 2
    return torch.stack([cx - half_x, cy - half_y, cx + half_x, cy + half_y], dim=-1)


def poly_to_hbox(polys: Tensor) -> Tensor:
    """Axis-aligned boxes ``(..., 4)`` ``(x1, y1, x2, y2)`` enclosing polygons ``(..., 2K)``."""
    pts = polys.unflatten(-1, (-1, 2))
    lo, hi = pts.min(-2).values, pts.max(-2).values
    return torch.cat([lo, hi], dim=-1)


def hbox_to_obb(hboxes: Tensor, convention: AngleConvention = "le90") -> Tensor:
    """Rotated boxes ``(..., 5)`` for axis-aligned boxes ``(..., 4)`` ``(x1, y1, x2, y2)``."""
    _check_last_dim(hboxes, 4, "hboxes")
    x1, y1, x2, y2 = hboxes.unbind(-1)
    out = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, torch.zeros_like(x1)], dim=-1)
    return regularize_obb(out, convention)


class RotatedBoxes:
    """A set of ``N`` rotated boxes held as one ``(N, 5)`` tensor ``(cx, cy, w, h, angle)``.

    A thin container so detection code can pass boxes around with their geometry helpers; all
    methods return new objects (or tensors) and keep the device and dtype of ``tensor``.
    """

    def __init__(self, tensor: Tensor | Sequence[Sequence[float]]) -> None:
        t = torch.as_tensor(tensor, dtype=torch.float32) if not isinstance(tensor, Tensor) else tensor
        if t.numel() == 0:
            t = t.reshape(0, 5).to(t.dtype if t.is_floating_point() else torch.float32)
        if t.dim() != 2 or t.shape[-1] != 5:
            raise ValueError(f"RotatedBoxes needs an (N, 5) tensor, got {tuple(t.shape)}")
        if not t.is_floating_point():
            t = t.float()
        self.tensor = t

    @classmethod
    def from_polygons(cls, polys: Tensor, convention: AngleConvention = "le90") -> RotatedBoxes:
        """Minimum-area rectangles of ``(N, 8)`` polygons."""
        return cls(poly_to_obb(polys, convention))

    @classmethod
    def cat(cls, boxes: Sequence[RotatedBoxes]) -> RotatedBoxes:
        """Concatenate several sets into one."""
        if not boxes:
            return cls(torch.zeros(0, 5))
        return cls(torch.cat([b.tensor for b in boxes], dim=0))

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, item: int | slice | Tensor) -> RotatedBoxes:
        t = self.tensor[item]
        return RotatedBoxes(t.reshape(1, 5) if t.dim() == 1 else t)

    def __repr__(self) -> str:
        return f"RotatedBoxes(tensor={self.tensor!r})"

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args: object, **kwargs: object) -> RotatedBoxes:
        """Move/cast like :meth:`torch.Tensor.to`."""
        return RotatedBoxes(self.tensor.to(*args, **kwargs))  # type: ignore[arg-type]

    def clone(self) -> RotatedBoxes:
        return RotatedBoxes(self.tensor.clone())

    def area(self) -> Tensor:
        """``(N,)`` areas ``w * h``."""
        return self.tensor[:, 2] * self.tensor[:, 3]

    def to_polygons(self) -> Tensor:
        """``(N, 8)`` corner polygons, see :func:`obb_to_poly`."""
        return obb_to_poly(self.tensor)

    def to_hboxes(self) -> Tensor:
        """``(N, 4)`` enclosing axis-aligned boxes, see :func:`obb_to_hbox`."""
        return obb_to_hbox(self.tensor)

    def regularize(self, convention: AngleConvention = "le90") -> RotatedBoxes:
        """The same rectangles in one angle convention, see :func:`regularize_obb`."""
        return RotatedBoxes(regularize_obb(self.tensor, convention))

    def clip(self, image_size: tuple[int, int], angle_threshold: float = math.radians(1.0)) -> RotatedBoxes:
        """Clip nearly axis-aligned boxes to the image ``(height, width)``.

        A rotated box clipped by the image border is no longer a rectangle of the same angle, so only
        boxes within ``angle_threshold`` (radians) of horizontal or vertical are clipped: they are
        treated as axis-aligned, intersected with the image and written back with their angle
        snapped to the nearest multiple of ``pi/2``. Other boxes are returned unchanged.
        """
        height, width = image_size
        t = self.tensor
        a = t[:, 4]
        quarter = torch.round(a / (math.pi / 2))
        near = (a - quarter * (math.pi / 2)).abs() <= angle_threshold
        if not bool(near.any()):
            return self.clone()
        snapped = torch.cat([t[:, :4], (quarter * (math.pi / 2)).unsqueeze(-1)], dim=-1)
        hb = obb_to_hbox(snapped)
        hb = torch.stack(
            [
                hb[:, 0].clamp(0, width),
                hb[:, 1].clamp(0, height),
                hb[:, 2].clamp(0, width),
                hb[:, 3].clamp(0, height),
            ],
            dim=-1,
        )
        odd = torch.remainder(quarter, 2) == 1
        bw, bh = hb[:, 2] - hb[:, 0], hb[:, 3] - hb[:, 1]
        clipped = torch.stack(
            [
                (hb[:, 0] + hb[:, 2]) / 2,
                (hb[:, 1] + hb[:, 3]) / 2,
                torch.where(odd, bh, bw),
                torch.where(odd, bw, bh),
                snapped[:, 4],
            ],
            dim=-1,
        )
        return RotatedBoxes(torch.where(near.unsqueeze(-1), clipped, t))

    def nonempty(self, threshold: float = 0.0) -> Tensor:
        """``(N,)`` bool mask of boxes whose sides are both longer than ``threshold``."""
        return (self.tensor[:, 2] > threshold) & (self.tensor[:, 3] > threshold)
