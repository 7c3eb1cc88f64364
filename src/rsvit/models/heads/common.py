"""Building blocks shared by the dense prediction heads.

The official segmentation heads are assembled from "conv + norm + ReLU" units whose convolution has no bias
when a norm follows (the norm's shift makes it redundant). ``ConvNormAct`` keeps that unit with the child
names ``conv`` / ``bn`` so that converted checkpoints line up one to one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]


class ConvNormAct(nn.Sequential):
    """Convolution followed by a norm layer and ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size; padding keeps the spatial size (``dilation * (kernel_size // 2)``).
        dilation: convolution dilation.
        norm: factory ``norm(num_channels) -> nn.Module``; ``None`` gives a biased convolution without norm.
        act: add the ReLU (on by default).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        dilation: int = 1,
        norm: NormFactory | None = nn.BatchNorm2d,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            bias=norm is None,
        )
        self.bn = norm(out_channels) if norm is not None else nn.Identity()
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()


@runtime_checkable
class DenseHead(Protocol):
    """What a segmentation head offers to :class:`rsvit.models.segmentor.Segmentor`.

    A head is an ``nn.Module`` that maps the backbone's list of NCHW feature maps to class logits at some
    resolution (the segmentor resizes them to the image size), and tells how many classes it predicts.
    UperNet, FCN and the DPT segmentation head all fit this contract.
    """

    num_classes: int

    def __call__(self, features: Sequence[torch.Tensor]) -> torch.Tensor: ...


def check_features(
    features: Sequence[torch.Tensor], in_index: Sequence[int], in_channels: Sequence[int], owner: str
) -> list[torch.Tensor]:
    """Select ``features[i]`` for ``i`` in ``in_index`` and check their rank and channel counts.

    Raises a ``ValueError`` naming ``owner`` so a mis-wired backbone/head pair fails with a readable message
    instead of a shape error deep inside a convolution.
    """
    if isinstance(features, torch.Tensor):
        raise TypeError(f"{owner} expects a list of NCHW feature maps, got a single tensor")
    n = len(features)
    needed = max(in_index) + 1 if in_index else 0
    if n < needed or any(i < -n for i in in_index):
        raise ValueError(f"{owner} reads feature maps {list(in_index)} but received only {n}")
    selected = [features[i] for i in in_index]
    for i, feat, expected in zip(in_index, selected, in_channels, strict=True):
        if feat.dim() != 4:
            raise ValueError(f"{owner}: feature map {i} must be NCHW, got shape {tuple(feat.shape)}")
        if feat.shape[1] != expected:
            raise ValueError(
                f"{owner}: feature map {i} has {feat.shape[1]} channels, the head was built for {expected}"
            )
    return selected
