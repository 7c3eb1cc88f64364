"""DPT's transformer encoder: a timm ViT (optionally on a BiT ResNet stem) plus the reassemble stages.

The encoder follows the multi-scale contract of :mod:`rsvit.models.backbones`: ``forward(x)`` returns a
list of four NCHW maps at strides 4, 8, 16 and 32, with ``.channels`` and ``.reductions`` attributes. That
makes the fusion decoder (:class:`rsvit.models.dpt.DPTHead`) independent of where its maps come from.

Numerics follow the official DPT code, which ran on timm 0.4.5:

* the hybrid's weight-standardised convolutions divide by ``std + eps`` (timm 1.x divides by
  ``sqrt(var + eps)``, which moves the fixture output by up to 0.7), so :class:`LegacyStdConv2dSame` replaces
  timm's ``StdConv2dSame``; timm's dynamic TF-"SAME" padding and ``MaxPool2dSame`` (``-inf`` fill) already
  match and are reused;
* position embeddings are resized on every call, bilinearly with ``align_corners=False`` and no antialias
  (timm's own dynamic-size path resizes bicubically).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import pad_same
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from rsvit.models.backbones.fused_linear import fuse_linear_layers

__all__ = [
    "DPTViTBackbone",
    "HybridPatchEmbed",
    "LegacyStdConv2dSame",
    "Readout",
    "ReadoutMode",
    "Reassemble",
    "resize_pos_embed",
]

ReadoutMode = Literal["ignore", "add", "project"]
READOUT_MODES: tuple[str, ...] = ("ignore", "add", "project")


class LegacyStdConv2dSame(nn.Conv2d):
    """Weight-standardised conv with TF "SAME" padding, as timm 0.4.5 computed it.

    Per output channel ``w_hat = (w - mean(w)) / (std(w) + eps)`` with the biased std over
    (in, kh, kw) and ``eps`` added to the std. Padding is recomputed for every input size
    (``p = max((ceil(n / s) - 1) * s + k - n, 0)``, the smaller half on the top/left).
    """

    # Tells weight loading (rsvit.weights.fit) to adapt the standardised kernel to other band counts.
    weight_standardized = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0,
            dilation=dilation,
            groups=groups,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.eps = eps

    def standardized_weight(self) -> Tensor:
        std, mean = torch.std_mean(self.weight, dim=(1, 2, 3), keepdim=True, correction=0)
        return (self.weight - mean) / (std + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        x = pad_same(x, list(self.kernel_size), list(self.stride), list(self.dilation))
        return F.conv2d(x, self.standardized_weight(), self.bias, self.stride, 0, self.dilation, self.groups)


class HybridPatchEmbed(nn.Module):
    """BiT ResNet (no pre-activation, GroupNorm, legacy StdConv, SAME padding) + 1x1 projection to tokens.

    Child names ``backbone`` / ``proj`` are those of timm's ``HybridEmbed`` (and of the official checkpoints).
    ``forward`` also returns every ResNet stage output, because DPT taps the first two.
    """

    def __init__(self, layers: Sequence[int], embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.backbone = ResNetV2(
            layers=list(layers),
            num_classes=0,
            global_pool="",
            in_chans=in_chans,
            preact=False,
            stem_type="same",
            conv_layer=LegacyStdConv2dSame,
        )
        self.stage_channels = [int(i["num_chs"]) for i in self.backbone.feature_info[1:]]
        self.proj = nn.Conv2d(self.stage_channels[-1], embed_dim, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.backbone.stem(x)
        stages = []
        for stage in self.backbone.stages:
            x = stage(x)
            stages.append(x)
        return self.proj(x), stages


def resize_pos_embed(pos_embed: Tensor, grid_size: tuple[int, int], num_prefix_tokens: int = 1) -> Tensor:
    """Resizes a ``(1, prefix + g*g, D)`` table to the token grid ``(gh, gw)`` like the official DPT.

    The square grid part is resized bilinearly (``align_corners=False``, no antialias) and flattened
    row-major; the prefix (class token) part is kept. For the trained grid size this is an exact identity.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    side = int(math.sqrt(grid.shape[1]))
    if side * side != grid.shape[1]:
        raise ValueError(f"position table has {grid.shape[1]} grid entries, not a square number")
    gh, gw = grid_size
    if (gh, gw) != (side, side):
        grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
    return torch.cat([prefix, grid], dim=1)


class Readout(nn.Module):
    """Folds the class (readout) token into the patch tokens: ``ignore`` it, ``add`` it, or ``project``.

    ``project`` is ``GELU(Linear([t_patch, t_cls]))`` (patch token first), the default of every released
    DPT model; the paper's ablation found it on par with ``ignore`` and better than ``add``.
    """

    def __init__(self, mode: ReadoutMode, dim: int, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if mode not in READOUT_MODES:
            raise ValueError(f"readout must be one of {READOUT_MODES}, got {mode!r}")
        self.mode = mode
        self.num_prefix_tokens = num_prefix_tokens
        self.proj = nn.Linear(2 * dim, dim) if mode == "project" else None
        self.act = nn.GELU() if mode == "project" else None

    def forward(self, tokens: Tensor) -> Tensor:
        patches = tokens[:, self.num_prefix_tokens :]
        if self.mode == "ignore":
            return patches
        readout = tokens[:, : self.num_prefix_tokens].mean(dim=1, keepdim=True)
        if self.mode == "add":
            return patches + readout
        assert self.proj is not None and self.act is not None
        return self.act(self.proj(torch.cat([patches, readout.expand_as(patches)], dim=-1)))


class Reassemble(nn.Module):
    """Tokens of one transformer block -> an NCHW map: readout, 1x1 conv to ``out_channels``, resample.

    ``scale`` 4 and 2 use non-overlapping transposed convs (kernel = stride), 1 nothing, 0.5 a 3x3/s2 conv.
    """

    def __init__(self, embed_dim: int, out_channels: int, scale: float, readout: ReadoutMode) -> None:
        super().__init__()
        self.readout = Readout(readout, embed_dim)
        self.conv = nn.Conv2d(embed_dim, out_channels, kernel_size=1)
        self.resample: nn.Module
        if scale in (4, 2):
            k = int(scale)
            self.resample = nn.ConvTranspose2d(out_channels, out_channels, kernel_size=k, stride=k)
        elif scale == 1:
            self.resample = nn.Identity()
        elif scale == 0.5:
            self.resample = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=2, padding=1)
        else:
            raise ValueError(f"unsupported reassemble scale {scale}")

    def forward(self, tokens: Tensor, grid_size: tuple[int, int]) -> Tensor:
        x = self.readout(tokens).transpose(1, 2)
        x = x.reshape(x.shape[0], x.shape[1], *grid_size)
        return self.resample(self.conv(x))


class DPTViTBackbone(nn.Module):
    """ViT (or ResNet+ViT hybrid) with DPT's taps and reassemble stages; returns maps at strides 4..32.

    Args:
        embed_dim, depth, num_heads: ViT size (timm ``VisionTransformer``, qkv bias, LayerNorm eps 1e-6).
        taps: four indices. Plain ViT: the blocks whose outputs are reassembled. Hybrid: entries 0 and 1
            are ResNet stages (used raw, without reassembling), entries 2 and 3 ViT blocks.
        widths: channels of the four reassembled maps.
        readout: ``"ignore"``, ``"add"`` or ``"project"``.
        resnet_layers: blocks per ResNet stage for the hybrid (``(3, 4, 9)``); ``None`` for a plain ViT.
        in_chans: input bands.
        img_size: training size; sets the stored position-table grid (``img_size / 16``).
        patch_size: ViT patch size (16); also the hybrid's total CNN stride.
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        taps: Sequence[int],
        widths: Sequence[int],
        readout: ReadoutMode = "project",
        resnet_layers: Sequence[int] | None = None,
        in_chans: int = 3,
        img_size: int = 384,
        patch_size: int = 16,
    ) -> None:
        super().__init__()
        if len(taps) != 4 or len(widths) != 4:
            raise ValueError(f"DPT needs four taps and four widths, got taps={taps}, widths={widths}")
        self.hybrid = resnet_layers is not None
        vit_taps = list(taps[2:] if self.hybrid else taps)
        if any(not 0 <= t < depth for t in vit_taps):
            raise ValueError(f"ViT taps {vit_taps} out of range for depth {depth}")
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.taps = list(taps)
        self.vit = VisionTransformer(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=0,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            final_norm=False,
        )
        fuse_linear_layers(self.vit)
        self.reassemble = nn.ModuleList()
        scales: tuple[float, ...] = (4, 2, 1, 0.5)
        if self.hybrid:
            assert resnet_layers is not None
            embed = HybridPatchEmbed(resnet_layers, embed_dim, in_chans)
            self.cnn_taps = list(taps[:2])
            if any(not 0 <= t < len(resnet_layers) for t in self.cnn_taps):
                raise ValueError(f"ResNet taps {self.cnn_taps} out of range for {len(resnet_layers)} stages")
            cnn_widths = [embed.stage_channels[t] for t in self.cnn_taps]
            if list(widths[:2]) != cnn_widths:
                raise ValueError(
                    f"hybrid widths {list(widths[:2])} must equal the tapped stages' {cnn_widths}"
                )
            self.vit.patch_embed = embed  # type: ignore[assignment]
            self.reassemble.extend([nn.Identity(), nn.Identity()])
            first_vit = 2
        else:
            self.cnn_taps = []
            first_vit = 0
        for i in range(first_vit, 4):
            self.reassemble.append(Reassemble(embed_dim, widths[i], scales[i], readout))
        self.vit_taps = vit_taps
        self.channels = list(widths)
        self.reductions = [4, 8, 16, 32]
        # Tokens need multiples of the patch size; the stride-32 level and the decoder's x2 steps need 32.
        self.pad_multiple = 32
        # The RGB input conv of official checkpoints, adapted to ``in_chans`` bands when loading
        # (rsvit.weights.fit: timm's repeat-and-rescale; the hybrid's standardised stem its own way).
        stem = "vit.patch_embed.backbone.stem.conv" if self.hybrid else "vit.patch_embed.proj"
        self.pretrained_cfg = {"first_conv": stem}

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.vit.num_prefix_tokens)

    def forward_tokens(self, x: Tensor) -> tuple[list[Tensor], list[Tensor], tuple[int, int]]:
        """CNN stage outputs (hybrid), tapped block outputs (with class token) and the token grid size."""
        h, w = x.shape[-2:]
        grid = (h // self.patch_size, w // self.patch_size)
        if self.hybrid:
            feat, stages = self.vit.patch_embed(x)
        else:
            feat, stages = self.vit.patch_embed.proj(x), []
        tokens = feat.flatten(2).transpose(1, 2)
        if tuple(feat.shape[-2:]) != grid:
            raise ValueError(f"input {h}x{w} gives a {tuple(feat.shape[-2:])} token grid, expected {grid}")
        cls = self.vit.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        tokens = tokens + resize_pos_embed(self.vit.pos_embed, grid, self.num_prefix_tokens)
        outputs: dict[int, Tensor] = {}
        for i, block in enumerate(self.vit.blocks[: max(self.vit_taps) + 1]):
            tokens = block(tokens)
            if i in self.vit_taps:
                outputs[i] = tokens
        return [stages[t] for t in self.cnn_taps], [outputs[t] for t in self.vit_taps], grid

    def forward(self, x: Tensor) -> list[Tensor]:
        h, w = x.shape[-2:]
        if h % self.pad_multiple or w % self.pad_multiple:
            raise ValueError(
                f"DPT's ViT encoder needs height and width divisible by {self.pad_multiple}, got {h}x{w}; "
                "resize or pad the input (DPT(pad_input=True) pads and crops for you)"
            )
        cnn_maps, token_maps, grid = self.forward_tokens(x)
        maps = list(cnn_maps)
        for stage, tokens in zip(self.reassemble[len(cnn_maps) :], token_maps, strict=True):
            maps.append(stage(tokens, grid))
        return maps
