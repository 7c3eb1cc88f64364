"""DPT's convolutional decoder: projections, fusion blocks and the depth / segmentation outputs.

:class:`DPTHead` takes any list of NCHW maps ordered finest first (strides increasing), so it sits on
DPT's own reassembled ViT features as well as on ``rsvit.models.create_backbone(...)`` pyramids (ViTAEv2,
Swin, ResNet). Each fusion block upsamples to the size of the next finer map (equal to the official fixed
x2 whenever the strides double, as in every official model), and the last one by x2.

The depth output's final ReLU (``non_negative``) defaults to on, as in every released model, so official
checkpoints behave exactly as published. For training from scratch it is a trap: a fresh head whose output
starts below zero passes no gradient through the ReLU and an L1 / BerHu loss never moves it. Hence
:class:`rsvit.tasks.regression.DenseRegressionTask` builds its spec-described networks with
``non_negative=False`` unless the spec says otherwise (written into the spec, so exported models rebuild
identically); heights are then unconstrained, and negative predictions can be clipped after the fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DPTHead",
    "DepthOutput",
    "FusionBlock",
    "ResidualConvUnit",
    "SegmentationOutput",
    "Task",
]

Task = Literal["depth", "segmentation"]


def _upsample(x: Tensor, size: Sequence[int] | None) -> Tensor:
    """Bilinear with ``align_corners=True`` (DPT's choice; ``False`` moves the fixture output by 4)."""
    if size is None:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))``, with BatchNorm after each conv when ``use_bn``.

    The skip adds the *un-activated* input: the ReLUs are not in-place.
    """

    def __init__(self, channels: int, use_bn: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=not use_bn)
        self.bn1 = nn.BatchNorm2d(channels) if use_bn else nn.Identity()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=not use_bn)
        self.bn2 = nn.BatchNorm2d(channels) if use_bn else nn.Identity()
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn1(self.conv1(self.act(x)))
        y = self.bn2(self.conv2(self.act(y)))
        return y + x


class FusionBlock(nn.Module):
    """``out_conv(upsample(unit(x + skip_unit(skip))))``: merge the coarser path with one skip map.

    Upsampling comes *before* the 1x1 ``out_conv``. The coarsest block has no skip and no ``skip_unit``.
    """

    def __init__(self, channels: int, use_bn: bool = False, has_skip: bool = True) -> None:
        super().__init__()
        self.skip_unit = ResidualConvUnit(channels, use_bn) if has_skip else None
        self.unit = ResidualConvUnit(channels, use_bn)
        self.out_conv = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: Sequence[int] | None = None) -> Tensor:
        if skip is not None:
            if self.skip_unit is None:
                raise ValueError("this fusion block was built without a skip input")
            x = x + self.skip_unit(skip)
        return self.out_conv(_upsample(self.unit(x), size))


class DepthOutput(nn.Module):
    """Depth output: 3x3 conv to F/2, x2 upsample, 3x3 conv to 32, ReLU, 1x1 conv to 1 (+ ReLU).

    The final ReLU (``non_negative``, on in every released model) keeps the relative inverse depth >= 0;
    turn it off to train a fresh head (see the module docstring).
    """

    def __init__(self, features: int = 256, hidden: int = 32, non_negative: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.conv2 = nn.Conv2d(features // 2, hidden, 3, padding=1)
        self.conv3 = nn.Conv2d(hidden, 1, kernel_size=1)
        self.act = nn.ReLU(inplace=False)
        self.non_negative = non_negative

    def forward(self, x: Tensor) -> Tensor:
        x = _upsample(self.conv1(x), None)
        x = self.conv3(self.act(self.conv2(x)))
        return F.relu(x) if self.non_negative else x


class SegmentationOutput(nn.Module):
    """Segmentation output: 3x3 conv (no bias) + BN + ReLU, dropout, 1x1 classifier, optional x2 upsample."""

    def __init__(self, features: int, num_classes: int, dropout: float = 0.1, upsample: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(features, features, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(features)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(features, num_classes, kernel_size=1)
        self.upsample = upsample

    def forward(self, x: Tensor) -> Tensor:
        x = self.classifier(self.dropout(self.act(self.bn(self.conv(x)))))
        return _upsample(x, None) if self.upsample else x


class DPTHead(nn.Module):
    """DPT fusion decoder + output on a list of NCHW maps (finest first), e.g. any rsvit backbone.

    Args:
        in_channels: channels of the input maps (``backbone.channels``).
        features: decoder width (256 in every official model).
        task: ``"depth"`` (one channel, see :class:`DepthOutput`) or ``"segmentation"``.
        num_classes: segmentation classes (ignored for depth).
        use_bn: BatchNorm in the residual units; default on for segmentation, off for depth (as official).
        non_negative: final ReLU of the depth output.
        aux: build the auxiliary segmentation output (the official checkpoints carry it; the paper attached it
            to the penultimate fusion output during training). Default on for segmentation.
        dropout: dropout before the classifier(s).

    ``forward`` returns ``(B, num_classes, H', W')`` at twice the resolution of the finest fusion output,
    i.e. the input resolution when the finest map has stride 4.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        features: int = 256,
        task: Task = "depth",
        num_classes: int = 150,
        use_bn: bool | None = None,
        non_negative: bool = True,
        aux: bool | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if task not in ("depth", "segmentation"):
            raise ValueError(f"task must be 'depth' or 'segmentation', got {task!r}")
        if not in_channels or any(int(c) < 1 for c in in_channels):
            raise ValueError(
                f"in_channels must be a non-empty list of positive ints, got {list(in_channels)}"
            )
        if task == "segmentation" and num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        segmentation = task == "segmentation"
        use_bn = segmentation if use_bn is None else use_bn
        aux = segmentation if aux is None else aux
        if aux and not segmentation:
            raise ValueError("the auxiliary output exists only for segmentation")
        self.task = task
        self.in_channels = [int(c) for c in in_channels]
        self.features = features
        self.num_classes = num_classes if segmentation else 1
        n = len(self.in_channels)
        self.projections = nn.ModuleList(
            nn.Conv2d(c, features, 3, padding=1, bias=False) for c in self.in_channels
        )
        self.fusions = nn.ModuleList(FusionBlock(features, use_bn, has_skip=i < n - 1) for i in range(n))
        self.output: nn.Module = (
            SegmentationOutput(features, num_classes, dropout)
            if segmentation
            else DepthOutput(features, non_negative=non_negative)
        )
        self.aux = SegmentationOutput(features, num_classes, dropout, upsample=False) if aux else None

    def decode(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Fusion outputs, finest first (``p1`` at half the finest input stride, ``p_n`` at the coarsest)."""
        if isinstance(features, Tensor) or len(features) != len(self.in_channels):
            got = "a single tensor" if isinstance(features, Tensor) else f"{len(features)} maps"
            raise ValueError(f"DPTHead expects a list of {len(self.in_channels)} NCHW maps, got {got}")
        for i, (f, c) in enumerate(zip(features, self.in_channels, strict=True)):
            if f.ndim != 4 or f.shape[1] != c:
                raise ValueError(f"DPTHead input {i} must be (B, {c}, H, W), got {tuple(f.shape)}")
        projected = [proj(f) for proj, f in zip(self.projections, features, strict=True)]
        n = len(projected)
        outs: list[Tensor] = [projected[-1]] * n
        x = self.fusions[-1](projected[-1], size=projected[-2].shape[-2:] if n > 1 else None)
        outs[-1] = x
        for i in range(n - 2, -1, -1):
            size = projected[i - 1].shape[-2:] if i > 0 else None
            x = self.fusions[i](x, projected[i], size=size)
            outs[i] = x
        return outs

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.output(self.decode(features)[0])

    def forward_with_aux(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor | None]:
        """Main output and auxiliary logits (on the penultimate fusion output), for training."""
        outs = self.decode(features)
        aux = None
        if self.aux is not None:
            aux = self.aux(outs[1] if len(outs) > 1 else outs[0])
        return self.output(outs[0]), aux
