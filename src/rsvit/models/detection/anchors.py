"""Horizontal anchors of the oriented RPN, laid out as the official (mmdet) anchor generator does.

One anchor size per level (``stride * scale``) and several aspect ratios ``h / w``. Anchor centres sit
on ``x * stride`` (not ``(x + 0.5) * stride``); checkpoints trained with the official code expect this.
Anchors of a level are ordered ``(y, x, ratio)``, matching the head outputs permuted to ``(H, W, A)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["AnchorGenerator"]


class AnchorGenerator(nn.Module):
    """Anchors ``(x1, y1, x2, y2)`` for every position of every pyramid level.

    Args:
        strides: stride of each level in input pixels (P2..P6: 4, 8, 16, 32, 64).
        ratios: anchor aspect ratios ``h / w``.
        scales: anchor sizes in units of the stride.
    """

    def __init__(
        self,
        strides: Sequence[int] = (4, 8, 16, 32, 64),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        scales: Sequence[float] = (8.0,),
    ) -> None:
        super().__init__()
        self.strides = [int(s) for s in strides]
        self.ratios = [float(r) for r in ratios]
        self.scales = [float(s) for s in scales]

    @property
    def num_anchors(self) -> int:
        """Anchors per position."""
        return len(self.ratios) * len(self.scales)

    def base_anchors(self, level: int, device: torch.device | None = None) -> Tensor:
        """``(A, 4)`` anchors of one level centred on the origin, ratio-major as in the official code."""
        stride = self.stride_of(level)
        rows = []
        for ratio in self.ratios:
            h_ratio = math.sqrt(ratio)
            w_ratio = 1.0 / h_ratio
            for scale in self.scales:
                w, h = stride * w_ratio * scale, stride * h_ratio * scale
                rows.append([-0.5 * w, -0.5 * h, 0.5 * w, 0.5 * h])
        return torch.tensor(rows, dtype=torch.float32, device=device)

    def stride_of(self, level: int) -> int:
        return self.strides[level]

    def grid_anchors(self, level: int, size: tuple[int, int], device: torch.device | None = None) -> Tensor:
        """``(H * W * A, 4)`` anchors of one level for a feature map of ``size = (H, W)``."""
        height, width = size
        stride = self.stride_of(level)
        base = self.base_anchors(level, device)
        xs = torch.arange(width, device=device, dtype=torch.float32) * stride
        ys = torch.arange(height, device=device, dtype=torch.float32) * stride
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
        return (shifts + base.unsqueeze(0)).reshape(-1, 4)

    def forward(self, sizes: Sequence[tuple[int, int]], device: torch.device | None = None) -> list[Tensor]:
        """Anchors of every level, one ``(H_l * W_l * A, 4)`` tensor per feature-map size."""
        if len(sizes) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature maps (one per stride), got {len(sizes)}")
        return [self.grid_anchors(i, (int(h), int(w)), device) for i, (h, w) in enumerate(sizes)]
