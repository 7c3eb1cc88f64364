"""UperNet decode head: a pyramid pooling module on the coarsest map plus an FPN over the finer ones.

Numerically equal to the UperNet head used by the RSP segmentation models (mmsegmentation 0.21 ``UPerHead``)
once its checkpoint keys are converted with :func:`rsvit.models.segmentor.convert_mmseg_state_dict`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rsvit.models.heads.common import ConvNormAct, NormFactory, check_features


class PyramidPooling(nn.Module):
    """Pool the input to several grid sizes, project, upsample back and fuse with the input.

    Output = ``fuse(cat([x, up(branch_1(x)), ..., up(branch_k(x))]))``; each branch is
    ``AdaptiveAvgPool2d(scale)`` followed by a 1x1 conv-norm-ReLU, ``fuse`` is a 3x3 conv-norm-ReLU.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        align_corners: bool = False,
        norm: NormFactory | None = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if not pool_scales or any(s < 1 for s in pool_scales):
            raise ValueError(f"pool_scales must be a non-empty list of positive ints, got {pool_scales}")
        self.pool_scales = tuple(int(s) for s in pool_scales)
        self.align_corners = align_corners
        self.branches = nn.ModuleList(
            ConvNormAct(in_channels, channels, 1, norm=norm) for _ in self.pool_scales
        )
        self.fuse = ConvNormAct(in_channels + len(self.pool_scales) * channels, channels, 3, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [x]
        for scale, branch in zip(self.pool_scales, self.branches, strict=True):
            pooled = branch(F.adaptive_avg_pool2d(x, scale))
            outs.append(F.interpolate(pooled, size=size, mode="bilinear", align_corners=self.align_corners))
        return self.fuse(torch.cat(outs, dim=1))


class UperNetHead(nn.Module):
    """UperNet head (Xiao et al., 2018) over a list of NCHW maps, finest first.

    The coarsest selected map goes through :class:`PyramidPooling`; the others get a 1x1 lateral
    projection, a top-down pathway adds each coarser level (bilinearly upsampled) to the next finer one,
    a 3x3 conv smooths every finer level, all levels are upsampled to the finest one, concatenated, fused
    by a 3x3 conv and classified by a 1x1 conv after ``Dropout2d``.

    Args:
        in_channels: channels of the maps the head reads, finest first (e.g. ``backbone.channels``).
        num_classes: output classes.
        channels: width of every internal level (512 in the official configs).
        pool_scales: grid sizes of the pyramid pooling module.
        dropout: ``Dropout2d`` probability before the classifier (0 disables it).
        align_corners: passed to every bilinear resize (``False`` in the official configs).
        norm: norm layer factory for the conv units; the official models use (Sync)BatchNorm.
        in_index: which backbone maps to read; default: all of them, in order, one per ``in_channels``.

    ``forward(features)`` returns logits at the resolution of the finest selected map (stride 4 for the
    usual backbones); :class:`~rsvit.models.segmentor.Segmentor` resizes them to the image.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        align_corners: bool = False,
        norm: NormFactory | None = nn.BatchNorm2d,
        in_index: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        if len(in_channels) < 1:
            raise ValueError("UperNetHead needs at least one input map")
        if num_classes < 1 or channels < 1:
            raise ValueError(f"num_classes and channels must be positive, got {num_classes} and {channels}")
        if in_index is None:
            in_index = range(len(in_channels))
        self.in_index = [int(i) for i in in_index]
        if len(self.in_index) != len(in_channels):
            raise ValueError(
                f"in_index {self.in_index} and in_channels {in_channels} must have the same length"
            )
        self.in_channels = in_channels
        self.channels = channels
        self.num_classes = num_classes
        self.align_corners = align_corners

        self.ppm = PyramidPooling(in_channels[-1], channels, pool_scales, align_corners, norm)
        self.lateral_convs = nn.ModuleList(ConvNormAct(c, channels, 1, norm=norm) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(
            ConvNormAct(channels, channels, 3, norm=norm) for _ in in_channels[:-1]
        )
        self.fuse = ConvNormAct(len(in_channels) * channels, channels, 3, norm=norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def _resize(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward_features(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fused decoder features (``channels`` wide) at the finest resolution, before the classifier."""
        inputs = check_features(features, self.in_index, self.in_channels, type(self).__name__)
        levels = [conv(x) for conv, x in zip(self.lateral_convs, inputs[:-1], strict=True)]
        levels.append(self.ppm(inputs[-1]))
        # Top-down pathway: coarse context flows into every finer level.
        for i in range(len(levels) - 1, 0, -1):
            levels[i - 1] = levels[i - 1] + self._resize(levels[i], levels[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, levels[:-1], strict=True)]
        outs.append(levels[-1])
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [self._resize(x, size) for x in outs[1:]]
        return self.fuse(torch.cat(outs, dim=1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.dropout(self.forward_features(features)))
