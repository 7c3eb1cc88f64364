"""DPT models: an encoder returning a stride-4..32 pyramid + :class:`DPTHead`, with the official variants.

>>> model = dpt_hybrid()                           # doctest: +SKIP  (DPT-Hybrid depth, MiDaS layout)
>>> depth = model(normalize(image_u8))             # doctest: +SKIP  (B, H, W) inverse depth, >= 0
>>> seg = dpt_with_backbone("vitaev2_s", task="segmentation", num_classes=6)  # doctest: +SKIP

Official variants (``isl-org/DPT``): DPT-Hybrid = BiT ResNet-50 (3 stages) + ViT-B/16, DPT-Large = ViT-L/16,
DPT-Base = ViT-B/16, all trained at 384 with the ``project`` readout and a 256-wide decoder.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsvit.models.backbones import create_backbone
from rsvit.models.dpt.encoder import DPTViTBackbone, ReadoutMode
from rsvit.models.dpt.head import DPTHead, Task
from rsvit.models.registry import register_task_model
from rsvit.models.spec import ModelSpec

__all__ = [
    "DPT",
    "DPT_MEAN",
    "DPT_STD",
    "DPT_VARIANTS",
    "dpt_base",
    "dpt_hybrid",
    "dpt_hybrid_reduced",
    "dpt_large",
    "dpt_with_backbone",
    "normalize",
]

# Every DPT model normalises RGB in [0, 1] by (x - 0.5) / 0.5.
DPT_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
DPT_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

# Encoder settings of the official variants; taps of the hybrid: ResNet stages 0 and 1, then ViT blocks.
DPT_VARIANTS: dict[str, dict[str, Any]] = {
    "hybrid": dict(
        embed_dim=768, depth=12, num_heads=12, taps=(0, 1, 8, 11), widths=(256, 512, 768, 768),
        resnet_layers=(3, 4, 9),
    ),
    "large": dict(
        embed_dim=1024, depth=24, num_heads=16, taps=(5, 11, 17, 23), widths=(256, 512, 1024, 1024),
    ),
    "base": dict(embed_dim=768, depth=12, num_heads=12, taps=(2, 5, 8, 11), widths=(96, 192, 384, 768)),
    # The reference fixture's reduced hybrid: official shapes everywhere except the depths.
    "hybrid_reduced": dict(
        embed_dim=768, depth=2, num_heads=12, taps=(0, 1, 0, 1), widths=(256, 512, 768, 768),
        resnet_layers=(1, 1, 1),
    ),
}  # fmt: skip


def normalize(image_u8: Tensor) -> Tensor:
    """``uint8`` images ``(..., 3, H, W)`` -> DPT input ``(x / 255 - 0.5) / 0.5``, computed in float64.

    The official scripts normalise in float64 and cast to float32 at the end; so does this.
    """
    if image_u8.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {image_u8.dtype}")
    mean = torch.tensor(DPT_MEAN, dtype=torch.float64).view(-1, 1, 1)
    std = torch.tensor(DPT_STD, dtype=torch.float64).view(-1, 1, 1)
    if image_u8.ndim < 3 or image_u8.shape[-3] != mean.shape[0]:
        raise ValueError(f"normalize expects (..., 3, H, W) images, got {tuple(image_u8.shape)}")
    return ((image_u8.to(torch.float64) / 255.0 - mean) / std).to(torch.float32)


class DPT(nn.Module):
    """Dense prediction transformer: ``backbone`` (list of NCHW maps) -> :class:`DPTHead` -> full-size output.

    Args:
        backbone: DPT's :class:`~rsvit.models.dpt.encoder.DPTViTBackbone` or any rsvit backbone
            (``rsvit.models.create_backbone``) whose ``channels`` match ``head.in_channels``.
        head: the decoder and output.
        pad_input: zero-pad the bottom/right of inputs to the backbone's multiple (32 for DPT's ViTs) and crop
            the output back. Off by default: the official models require multiples of 32.
        invert, scale, shift: depth only. With ``invert`` the output is metric depth
            ``1 / max(scale * out + shift, 1e-8)`` (the official KITTI/NYU fine-tunes' convention).

    ``forward(x)`` returns depth ``(B, H, W)`` or segmentation logits ``(B, num_classes, H, W)``.
    """

    weights_family = "dpt"

    def __init__(
        self,
        backbone: nn.Module,
        head: DPTHead,
        pad_input: bool = False,
        invert: bool = False,
        scale: float = 1.0,
        shift: float = 0.0,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in getattr(backbone, "channels", [])]
        if channels != head.in_channels:
            raise ValueError(f"backbone gives channels {channels}, the DPT head expects {head.in_channels}")
        reductions = list(getattr(backbone, "reductions", []))
        if any(b <= a for a, b in itertools.pairwise(reductions)):
            raise ValueError(
                f"the DPT decoder fuses maps from fine to coarse: backbone strides {reductions} must grow "
                "(plain ViT blocks all have stride 16: use dpt_base/dpt_large, which reassemble them)"
            )
        if invert and head.task != "depth":
            raise ValueError("invert/scale/shift apply only to depth models")
        self.backbone = backbone
        self.head = head
        self.pad_input = pad_input
        self.invert = invert
        self.scale = scale
        self.shift = shift
        self.in_chans = int(getattr(backbone, "in_chans", 3))
        self.pad_multiple = int(getattr(backbone, "pad_multiple", 1))

    @property
    def task(self) -> Task:
        return self.head.task

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"DPT expects an image batch (B, {self.in_chans}, H, W), got {shape}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"DPT was built for {self.in_chans} input bands, got {x.shape[1]} (input shape "
                f"{tuple(x.shape)}); select matching bands or rebuild with in_chans={x.shape[1]}"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"DPT expects a normalised float image, got {x.dtype} (see rsvit.models.dpt.normalize)"
            )

    def features(self, x: Tensor) -> tuple[list[Tensor], tuple[int, int]]:
        """Checked (and, with ``pad_input``, padded) input -> backbone maps and the padded input size."""
        self._check_input(x)
        h, w = x.shape[-2:]
        if self.pad_input:
            ph, pw = (-h) % self.pad_multiple, (-w) % self.pad_multiple
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph))
        maps = list(self.backbone(x))
        # rsvit backbones may pad internally: the finest map tells the size the decoder output covers.
        r = int(self.backbone.reductions[0])
        padded = (max(int(x.shape[-2]), maps[0].shape[-2] * r), max(int(x.shape[-1]), maps[0].shape[-1] * r))
        return maps, padded

    def _finish(self, out: Tensor, padded: tuple[int, int], size: tuple[int, int]) -> Tensor:
        if tuple(out.shape[-2:]) != padded:
            out = F.interpolate(out, size=padded, mode="bilinear", align_corners=False)
        out = out[..., : size[0], : size[1]]
        if self.task != "depth":
            return out
        out = out[:, 0]
        if self.invert:
            out = 1.0 / (self.scale * out + self.shift).clamp(min=1e-8)
        return out

    def forward(self, x: Tensor) -> Tensor:
        maps, padded = self.features(x)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        return self._finish(self.head(maps), padded, size)

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Segmentation logits and auxiliary logits (both at input size), for training."""
        maps, padded = self.features(x)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        out, aux = self.head.forward_with_aux(maps)
        if aux is not None:
            aux = F.interpolate(aux, size=padded, mode="bilinear", align_corners=False)[
                ..., : size[0], : size[1]
            ]
        return self._finish(out, padded, size), aux


def _dpt_vit(
    variant: str,
    task: Task = "depth",
    num_classes: int = 150,
    readout: ReadoutMode = "project",
    in_chans: int = 3,
    img_size: int = 384,
    features: int = 256,
    non_negative: bool = True,
    **model_kwargs: Any,
) -> DPT:
    cfg = DPT_VARIANTS[variant]
    backbone = DPTViTBackbone(readout=readout, in_chans=in_chans, img_size=img_size, **cfg)
    head = DPTHead(backbone.channels, features, task=task, num_classes=num_classes, non_negative=non_negative)
    return DPT(backbone, head, **model_kwargs)


def dpt_hybrid(task: Task = "depth", num_classes: int = 150, **kwargs: Any) -> DPT:
    """DPT-Hybrid: ViT-B/16 on a BiT ResNet-50 stem (``dpt_hybrid-midas``, ``dpt_hybrid-ade20k`` layouts).

    ``kwargs``: ``readout``, ``in_chans``, ``img_size``, ``features``, ``non_negative`` and the :class:`DPT`
    options (``pad_input``, ``invert``, ``scale``, ``shift``).
    """
    return _dpt_vit("hybrid", task, num_classes, **kwargs)


def dpt_large(task: Task = "depth", num_classes: int = 150, **kwargs: Any) -> DPT:
    """DPT-Large: ViT-L/16 tapped after blocks 5, 11, 17, 23 (``dpt_large-midas`` layout)."""
    return _dpt_vit("large", task, num_classes, **kwargs)


def dpt_base(task: Task = "depth", num_classes: int = 150, **kwargs: Any) -> DPT:
    """DPT-Base: ViT-B/16 tapped after blocks 2, 5, 8, 11, reassembled to 96/192/384/768 channels."""
    return _dpt_vit("base", task, num_classes, **kwargs)


def dpt_hybrid_reduced(task: Task = "depth", num_classes: int = 150, **kwargs: Any) -> DPT:
    """The reference fixture's reduced DPT-Hybrid: ResNet stages (1, 1, 1), 2 ViT blocks, taps 0, 1, 0, 1."""
    return _dpt_vit("hybrid_reduced", task, num_classes, **kwargs)


def dpt_with_backbone(
    backbone: str | nn.Module,
    task: Task = "depth",
    num_classes: int = 150,
    features: int = 256,
    in_chans: int = 3,
    out_indices: Sequence[int] | None = None,
    head_kwargs: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> DPT:
    """DPT decoder on any rsvit backbone, e.g. ``"vitaev2_s"``, ``"swin_t"``, ``"resnet50"``.

    The backbone must return maps with increasing strides (its default pyramid does); a built module with
    ``channels``/``reductions`` attributes is accepted as well.
    """
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, out_indices=out_indices, in_chans=in_chans)
    channels = list(getattr(backbone, "channels", []))
    head = DPTHead(channels, features, task=task, num_classes=num_classes, **(head_kwargs or {}))
    return DPT(backbone, head, **model_kwargs)


@register_task_model("regression", "dpt", default=True)
def _regression_dpt_from_spec(spec: ModelSpec) -> DPT:
    backbone = create_backbone(spec.backbone, in_chans=spec.in_chans, **spec.backbone_kwargs)
    return dpt_with_backbone(backbone, task="depth", **spec.head_kwargs)
