"""Feature pyramid network as used by the official Oriented R-CNN configs (mmdet ``FPN``, defaults).

1x1 lateral and 3x3 output convolutions with bias, no normalisation or activation, nearest-neighbour
top-down merging, and extra levels made by subsampling the coarsest output (``max_pool2d`` with kernel
1 and stride 2, i.e. every second pixel) rather than by a strided convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FPN"]


class FPN(nn.Module):
    """Pyramid of ``num_outs`` maps with ``out_channels`` channels from backbone maps ``in_channels``.

    Input: the backbone maps from fine to coarse (strides 4..32). Output: P2..P5 and, for
    ``num_outs > len(in_channels)``, the subsampled extra levels (P6, ...).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, num_outs: int = 5) -> None:
        super().__init__()
        if num_outs < len(in_channels):
            raise ValueError(
                f"num_outs ({num_outs}) must be at least the number of inputs ({len(in_channels)})"
            )
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels
        )
        for conv in [*self.lateral_convs, *self.fpn_convs]:  # official initialisation
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f"FPN expects {len(self.in_channels)} feature maps, got {len(feats)}")
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals, strict=True)]
        while len(outs) < self.num_outs:
            outs.append(outs[-1][..., ::2, ::2])
        return outs
