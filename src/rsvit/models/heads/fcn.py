"""FCN head: a few conv-norm-ReLU units on one backbone map and a 1x1 classifier.

Used as the auxiliary head of the RSP UperNet models (on the stride-16 map, loss weight 0.4); equal to
mmsegmentation 0.21 ``FCNHead`` after key conversion
(see :func:`rsvit.models.segmentor.convert_mmseg_state_dict`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rsvit.models.heads.common import ConvNormAct, NormFactory, check_features


class FCNHead(nn.Module):
    """Fully convolutional head on a single feature map.

    Args:
        in_channels: channels of the map the head reads.
        channels: width of the conv units.
        num_classes: output classes.
        in_index: which map of the backbone's list to read (2 = stride 16 in the official auxiliary head).
        num_convs: number of conv-norm-ReLU units; 0 passes the input straight to the classifier, which then
            requires ``in_channels == channels``.
        concat_input: concatenate the input with the conv output and fuse them with one more unit.
        kernel_size: kernel of the conv units.
        dilation: dilation of the conv units.
        dropout: ``Dropout2d`` probability before the classifier (0 disables it).
        norm: norm layer factory; the official models use (Sync)BatchNorm.

    ``forward(features)`` returns logits at the resolution of the selected map.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        in_index: int = -1,
        num_convs: int = 1,
        concat_input: bool = False,
        kernel_size: int = 3,
        dilation: int = 1,
        dropout: float = 0.1,
        norm: NormFactory | None = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if num_convs < 0:
            raise ValueError(f"num_convs must be >= 0, got {num_convs}")
        if num_convs == 0 and in_channels != channels:
            raise ValueError(
                f"with num_convs=0 the input goes straight to the classifier: in_channels ({in_channels}) "
                f"must equal channels ({channels})"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.in_channels = int(in_channels)
        self.channels = int(channels)
        self.num_classes = int(num_classes)
        self.in_index = int(in_index)
        self.convs = nn.Sequential(
            *(
                ConvNormAct(in_channels if i == 0 else channels, channels, kernel_size, dilation, norm=norm)
                for i in range(num_convs)
            )
        )
        self.concat_conv = (
            ConvNormAct(in_channels + channels, channels, kernel_size, norm=norm) if concat_input else None
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        (x,) = check_features(features, [self.in_index], [self.in_channels], type(self).__name__)
        out = self.convs(x)
        if self.concat_conv is not None:
            out = self.concat_conv(torch.cat([x, out], dim=1))
        return self.classifier(self.dropout(out))
