"""Geometric augmentation for oriented detection: flips and quarter turns that carry the boxes along.

The corners of every object move with the image (continuous pixel coordinates, the image spanning
``[0, W] x [0, H]``) and the le90 box is fitted again to the moved corners, so a box stays a valid le90
box (``w >= h``, angle in ``[-pi/2, pi/2)``) whatever the transform. Quarter turns are counter-clockwise
as displayed, the same as :func:`torch.rot90` over ``(H, W)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DetectionAugment", "hflip", "rot90", "vflip"]


def _check(image: Tensor, polygons: Tensor) -> None:
    if image.ndim != 3:
        raise ValueError(f"expected an image (C, H, W), got {tuple(image.shape)}")
    if polygons.ndim != 2 or polygons.shape[-1] != 8:
        raise ValueError(f"expected polygons (N, 8), got {tuple(polygons.shape)}")


def hflip(image: Tensor, polygons: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror left-right: ``x -> W - x``."""
    _check(image, polygons)
    out = polygons.clone()
    out[:, 0::2] = image.shape[-1] - polygons[:, 0::2]
    return image.flip(-1), out


def vflip(image: Tensor, polygons: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror top-bottom: ``y -> H - y``."""
    _check(image, polygons)
    out = polygons.clone()
    out[:, 1::2] = image.shape[-2] - polygons[:, 1::2]
    return image.flip(-2), out


def rot90(image: Tensor, polygons: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
    """``k`` quarter turns counter-clockwise: per turn ``(x, y) -> (y, W - x)``; the image becomes W x H."""
    _check(image, polygons)
    for _ in range(k % 4):
        width = image.shape[-1]
        x, y = polygons[:, 0::2].clone(), polygons[:, 1::2].clone()
        polygons = polygons.clone()
        polygons[:, 0::2] = y
        polygons[:, 1::2] = width - x
        image = torch.rot90(image, 1, dims=(-2, -1))
    return image, polygons


@dataclass(frozen=True)
class DetectionAugment:
    """Random horizontal / vertical flips and quarter turns, each applied with its probability.

    ``rot90`` draws one, two or three quarter turns with equal chance when it fires. The official DOTA
    1x recipe uses ``hflip=0.5, vflip=0.5, rot90=0`` (its rotation step can only draw 0 degrees).
    """

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "rot90"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} probability must be in [0, 1], got {p}")

    def __call__(
        self, image: Tensor, polygons: Tensor, rng: random.Random | None = None
    ) -> tuple[Tensor, Tensor]:
        rng = rng or random
        if rng.random() < self.hflip:
            image, polygons = hflip(image, polygons)
        if rng.random() < self.vflip:
            image, polygons = vflip(image, polygons)
        if rng.random() < self.rot90:
            image, polygons = rot90(image, polygons, rng.randint(1, 3))
        return image, polygons
