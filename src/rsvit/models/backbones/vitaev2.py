"""ViTAEv2 with non-shifted window attention, as used for Remote Sensing Pretraining (RSP).

Each stage starts with a Reduction Cell (RC) that shrinks the grid and mixes a multi-dilation
convolutional pyramid (PRM) with attention, while a parallel convolution module (PCM) keeps local
detail. Normal Cells (NC) follow: attention plus a grouped-convolution branch on the un-normalised
input. Stages 0-1 attend inside non-overlapping 7x7 windows (never shifted), stages 2-3 globally.

Numerics follow the official RSP code exactly (exact GELU, LayerNorm eps 1e-5 in reduction cells and
1e-6 in normal cells, zero padding of windows without masking, dilation-major PRM concatenation);
the layout is our own and official checkpoints are mapped by :func:`checkpoint_filter_fn`.

Tokens are kept as ``(B, H, W, C)`` tensors so that the convolutional branches see a channels-last
view of the same memory and no token <-> image conversion copies data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import build_model_with_cfg
from torch import Tensor, nn

from rsvit.errors import ModelConfigError
from rsvit.models.backbones.fused_linear import FusedLinear, FusedMlp
from rsvit.weights.convert import register_converter

__all__ = [
    "ViTAEv2",
    "check_output_stride",
    "checkpoint_filter_fn",
    "official_kwargs_to_ours",
    "vitaev2_s",
]

_RC_EPS = 1e-5  # LayerNorms inside reduction cells use the PyTorch default.
_NC_EPS = 1e-6  # LayerNorms inside normal cells.


def _to_image(x: Tensor) -> Tensor:
    """(B, H, W, C) tokens -> (B, C, H, W) view in channels-last memory (no copy)."""
    return x.permute(0, 3, 1, 2)


def _to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H, W, C); free when ``x`` is channels-last."""
    return x.permute(0, 2, 3, 1).contiguous()


def _conv_bn(x: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Tensor:
    """``bn(conv(x))`` with frozen statistics as one convolution (weights folded on the fly)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    return F.conv2d(
        x,
        weight,
        (bias - bn.running_mean) * scale + bn.bias,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
    )


class ParallelConv(nn.Sequential):
    """Parallel convolution module: conv-BN-SiLU, conv-BN-SiLU, conv (indices match the official ones).

    At inference the BatchNorms are folded into the convolutions before them on every call: that costs a
    few kernel-sized multiplications instead of a full pass over the block's largest activations (in
    float32 the normalisation passes were a tenth of the forward time). Training uses the plain layers.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training or torch.jit.is_scripting():
            return super().forward(x)
        conv0, bn0, _, conv1, bn1, _, conv2 = self
        x = F.silu(_conv_bn(x, conv0, bn0), inplace=True)
        x = F.silu(_conv_bn(x, conv1, bn1), inplace=True)
        return conv2(x)


def _pcm(widths: Sequence[int], strides: Sequence[int], groups: int) -> ParallelConv:
    """The :class:`ParallelConv` of a cell; ``widths`` are the channels before and after each convolution."""
    c0, c1, c2, c3 = widths
    s0, s1, s2 = strides
    return ParallelConv(
        nn.Conv2d(c0, c1, 3, s0, 1, groups=groups),
        nn.BatchNorm2d(c1),
        nn.SiLU(inplace=True),
        nn.Conv2d(c1, c2, 3, s1, 1, groups=groups),
        nn.BatchNorm2d(c2),
        nn.SiLU(inplace=True),
        nn.Conv2d(c2, c3, 3, s2, 1, groups=groups),
    )


# On CPU, PyTorch's fused attention kernel is slow in bfloat16 for short sequences: measured on 2 cores,
# batch 8, against an explicit matmul-softmax-matmul, it takes 1.7-2.1x as long for inference and 2.8-6.9x
# for training at 49 (window) and 196 (stage-3 global) tokens, and wins from several hundred tokens on.
# In float32 the fused kernel is as fast or faster at every length (training at 49 tokens: 2x faster),
# so only reduced-precision short sequences on CPU take the explicit path. GPUs always take the fused one.
SHORT_SEQUENCE_CPU = 256


def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Softmax attention of ``(..., N, D)`` tensors.

    The fused kernel, or the explicit product where that is measurably faster (CPU, bfloat16/float16,
    N <= ``SHORT_SEQUENCE_CPU``); same numerics up to rounding.
    """
    if (
        q.device.type == "cpu"
        and q.dtype in (torch.bfloat16, torch.float16)
        and q.shape[-2] <= SHORT_SEQUENCE_CPU
    ):
        n, m, d = q.shape[-2], k.shape[-2], q.shape[-1]
        q3, k3 = q.reshape(-1, n, d), k.reshape(-1, m, d)
        # The scale rides on the matmul (alpha) rather than costing a pass over q.
        scores = q3.new_empty(q3.shape[0], n, m)
        scores = torch.baddbmm(scores, q3, k3.transpose(1, 2), beta=0.0, alpha=d**-0.5)
        return scores.softmax(dim=-1).view(*q.shape[:-2], n, m) @ v
    return F.scaled_dot_product_attention(q, k, v)


def _to_windows(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) -> (B * windows, window * window, C), windows in row-major order (one copy)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def _from_windows(x: Tensor, b: int, h: int, w: int, window: int) -> Tensor:
    """Inverse of :func:`_to_windows` (one copy)."""
    c = x.shape[-1]
    x = x.view(b, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def _heads_attention(qkv: Tensor, num_heads: int) -> Tensor:
    """Multi-head attention over the tokens of a ``(B, N, 3C)`` qkv tensor; returns ``(B, N, C)``.

    q, k and v stay strided views of ``qkv``, which the attention kernels read in place; the fused
    kernel also lays its ``(B, heads, N, hd)`` output out token-major, so merging the heads is free.
    """
    b, n, c3 = qkv.shape
    c = c3 // 3
    q, k, v = qkv.view(b, n, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4).unbind(0)
    return attend(q, k, v).transpose(1, 2).reshape(b, n, c)


class TokenAttention(nn.Module):
    """Multi-head attention on ``(B, H, W, C_in)`` tokens, windowed (with zero padding) or global.

    ``out_dim`` may differ from ``dim`` (reduction cells widen or narrow the tokens). ``value_skip``
    adds the head-concatenated values to the projected output, as the global reduction cells do.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        num_heads: int,
        window_size: int | None,
        qkv_bias: bool = True,
        value_skip: bool = False,
    ) -> None:
        super().__init__()
        if out_dim % num_heads:
            raise ValueError(f"attention width {out_dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.window_size = window_size
        self.value_skip = value_skip
        self.qkv = FusedLinear(dim, out_dim * 3, bias=qkv_bias)
        self.proj = FusedLinear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        if self.window_size is None:
            qkv = self.qkv(x).view(b, h * w, -1)
            out = self.proj(_heads_attention(qkv, self.num_heads))
            if self.value_skip:
                out = out + qkv[..., 2 * out.shape[-1] :]  # v with its heads side by side
            return out.view(b, h, w, -1)
        ws = self.window_size
        pad_h, pad_w = (-h) % ws, (-w) % ws
        if pad_h or pad_w:
            # Padded tokens are zeros before the qkv projection and take part in attention unmasked,
            # exactly like the official dense models.
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        # Tokens are regrouped by window once on the way in and once on the way out. The projections
        # act per token, so they run in window order; the way in moves the narrower of input and qkv.
        if x.shape[-1] <= self.qkv.out_features:
            qkv = self.qkv(_to_windows(x, ws))
        else:
            qkv = _to_windows(self.qkv(x), ws)
        out = _from_windows(self.proj(_heads_attention(qkv, self.num_heads)), b, hp, wp, ws)
        if pad_h or pad_w:
            out = out[:, :h, :w]
        return out


class PyramidReduction(nn.Module):
    """PRM: parallel dilated strided convolutions, GELU, concatenated dilation-major along channels."""

    def __init__(
        self, in_dim: int, dim: int, kernel_size: int, stride: int, dilations: Sequence[int]
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(
                in_dim,
                dim,
                kernel_size,
                stride=stride,
                padding=math.ceil(((kernel_size - 1) * d + 1 - stride) / 2),
                dilation=d,
            )
            for d in dilations
        )
        self.out_dim = dim * len(dilations)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([F.gelu(conv(x)) for conv in self.convs], dim=1)


class ReductionCell(nn.Module):
    """Downsamples the grid by ``stride`` and maps to ``out_dim`` channels (tokens in, tokens out)."""

    def __init__(
        self,
        in_dim: int,
        embed_dim: int,
        out_dim: int,
        stride: int,
        kernel_size: int,
        dilations: Sequence[int],
        num_heads: int,
        groups: int,
        window_size: int | None,
    ) -> None:
        super().__init__()
        if stride not in (2, 4):
            raise ValueError(f"reduction stride must be 2 or 4, got {stride}")
        self.stride = stride
        self.prm = PyramidReduction(in_dim, embed_dim, kernel_size, stride, dilations)
        pcm_strides = (2, 2, 1) if stride == 4 else (2, 1, 1)
        self.pcm = _pcm((in_dim, embed_dim, embed_dim, out_dim), pcm_strides, groups)
        self.norm1 = nn.LayerNorm(self.prm.out_dim, eps=_RC_EPS)
        # Windowed reduction attention has no skip; the global one adds its values back instead.
        self.attn = TokenAttention(
            self.prm.out_dim,
            out_dim,
            num_heads,
            window_size,
            qkv_bias=window_size is not None,
            value_skip=window_size is None,
        )
        self.norm2 = nn.LayerNorm(out_dim, eps=_RC_EPS)
        self.mlp = FusedMlp(out_dim, out_dim, out_dim)

    def forward(self, image: Tensor) -> Tensor:
        """``image`` is (B, C, H, W) (any memory format); returns (B, H/s, W/s, C_out) tokens."""
        p = _to_tokens(self.prm(image))
        y = self.attn(self.norm1(p)) + _to_tokens(self.pcm(image))
        return y + self.mlp(self.norm2(y))


class NormalCell(nn.Module):
    """Attention and grouped-convolution branches in parallel on the same tokens, then an MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        groups: int,
        window_size: int | None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_NC_EPS)
        self.attn = TokenAttention(dim, dim, num_heads, window_size, qkv_bias=qkv_bias)
        self.pcm = _pcm((dim, int(dim * mlp_ratio), dim, dim), (1, 1, 1), groups)
        self.norm2 = nn.LayerNorm(dim, eps=_NC_EPS)
        self.mlp = FusedMlp(dim, int(dim * mlp_ratio), dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        conv = _to_tokens(self.pcm(_to_image(x)))
        y = x + self.drop_path(self.attn(self.norm1(x))) + self.drop_path(conv)
        return y + self.drop_path(self.mlp(self.norm2(y)))


class ViTAEv2Stage(nn.Module):
    def __init__(self, reduction: ReductionCell, blocks: Sequence[NormalCell]) -> None:
        super().__init__()
        self.reduction = reduction
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False

    def forward(self, image: Tensor) -> Tensor:
        x = self.reduction(image)
        if self.grad_checkpointing and torch.is_grad_enabled():
            for blk in self.blocks:
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            return x
        return self.blocks(x)


def _official_drop_path_rates(depths: Sequence[int], drop_path_rate: float) -> list[list[float]]:
    """Per-block drop-path rates sliced the way the official RSP code slices them.

    The official schedule is ``linspace(0, rate, sum(depths))`` but stage ``i > 0`` starts at index
    ``depths[i - 1]`` rather than at the cumulative sum. Reproduced so that training recipes match.
    """
    total = sum(depths)
    dpr = [drop_path_rate * i / (total - 1) for i in range(total)] if total > 1 else [0.0] * total
    rates = []
    for i, depth in enumerate(depths):
        start = 0 if i == 0 else depths[i - 1]
        rates.append(dpr[start : start + depth])
    return rates


_DEFAULT_DOWNSAMPLE_RATIOS = (4, 2, 2, 2)


def check_output_stride(model_name: str, output_stride: int | None, total_stride: int) -> None:
    """Refuses any output stride but the model's own: ViTAEv2 cannot trade stride for dilation.

    Its stages downsample in reduction cells whose windowed attention and relative positions are
    tied to the token grid, so unlike dilatable CNNs (``resnet50``, ``convnext``) it has no stride-8/16
    mode. Raised as timm's non-dilatable models do (a ``ValueError``), naming the model and the strides.
    """
    if output_stride is None or output_stride == total_stride:
        return
    raise ModelConfigError(
        f"{model_name} supports only output_stride={total_stride} (its stages cannot be dilated), got "
        f"{output_stride}; for an output stride of 8 or 16 (e.g. DeepLabV3+) use a dilatable backbone "
        "such as resnet50 or convnext"
    )


class ViTAEv2(nn.Module):
    """ViTAEv2 (window attention without shift) for classification and dense features.

    Args:
        in_chans: input bands.
        num_classes: classifier outputs; 0 for a feature extractor without head.
        embed_dims: PRM/PCM width of each reduction cell.
        token_dims: output channels of each stage.
        downsample_ratios: grid reduction of each stage (cumulative strides 4/8/16/32 by default).
        kernel_sizes, dilations: PRM convolution kernel and dilation set of each stage.
        depths: normal cells per stage.
        num_heads, reduction_heads: attention heads of normal and reduction cells.
        groups, reduction_groups: convolution groups of the PCM in normal and reduction cells.
        window_stages: which stages attend in windows (the others attend globally).
        window_size: window side for the windowed stages (never shifted).
        drop_path_rate: stochastic depth, scheduled as in the official code.
        global_pool: "avg" (mean of the last stage's tokens, as RSP) or "" for none.
        output_stride: accepted for timm clients (segmentation_models_pytorch); only the total stride
            (32 by default) is supported.

    Any input size works: the image is zero-padded at the bottom and right to a multiple of the total
    stride, and feature maps cover the padded image (``ceil(H / stride)`` rows).
    """

    weights_family = "vitaev2"

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 64, 128, 256),
        token_dims: Sequence[int] = (64, 128, 256, 512),
        downsample_ratios: Sequence[int] = _DEFAULT_DOWNSAMPLE_RATIOS,
        kernel_sizes: Sequence[int] = (7, 3, 3, 3),
        dilations: Sequence[Sequence[int]] = ((1, 2, 3, 4), (1, 2, 3), (1, 2), (1, 2)),
        depths: Sequence[int] = (2, 2, 8, 2),
        num_heads: Sequence[int] = (1, 2, 4, 8),
        reduction_heads: Sequence[int] = (1, 1, 2, 4),
        groups: Sequence[int] = (1, 32, 64, 128),
        reduction_groups: Sequence[int] = (1, 16, 32, 64),
        window_stages: Sequence[bool] = (True, True, False, False),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        output_stride: int | None = None,
    ) -> None:
        super().__init__()
        check_output_stride(type(self).__name__, output_stride, math.prod(downsample_ratios))
        per_stage = [embed_dims, token_dims, downsample_ratios, kernel_sizes, dilations, depths]
        per_stage += [num_heads, reduction_heads, groups, reduction_groups, window_stages]
        num_stages = len(token_dims)
        if any(len(v) != num_stages for v in per_stage):
            raise ValueError("every per-stage setting of ViTAEv2 needs one entry per stage")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = token_dims[-1]
        self.grad_checkpointing = False

        rates = _official_drop_path_rates(depths, drop_path_rate)
        stages = []
        self.feature_info: list[dict[str, Any]] = []
        stride, prev_dim = 1, in_chans
        for i in range(num_stages):
            window = window_size if window_stages[i] else None
            reduction = ReductionCell(
                prev_dim,
                embed_dims[i],
                token_dims[i],
                downsample_ratios[i],
                kernel_sizes[i],
                dilations[i],
                reduction_heads[i],
                reduction_groups[i],
                window,
            )
            blocks = [
                NormalCell(token_dims[i], num_heads[i], groups[i], window, mlp_ratio, qkv_bias, rates[i][j])
                for j in range(depths[i])
            ]
            stages.append(ViTAEv2Stage(reduction, blocks))
            stride *= downsample_ratios[i]
            prev_dim = token_dims[i]
            self.feature_info.append(dict(num_chs=token_dims[i], reduction=stride, module=f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self.total_stride = stride
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # -- timm model interface -------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^stages\.0\.reduction",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.reduction", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _pad_input(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"ViTAEv2 expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"ViTAEv2 was built for {self.in_chans} input bands but got {x.shape[1]}; build it with "
                f"in_chans={x.shape[1]} or select {self.in_chans} bands"
            )
        pad_h, pad_w = (-x.shape[2]) % self.total_stride, (-x.shape[3]) % self.total_stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return x

    def _stage_tokens(self, x: Tensor, last: int) -> list[Tensor]:
        """Runs stages 0..last and returns each stage's (B, H, W, C) tokens."""
        out = []
        # Channels-last from the start: every convolution then reads and writes token-ordered memory.
        image = self._pad_input(x).contiguous(memory_format=torch.channels_last)
        for stage in self.stages[: last + 1]:
            tokens = stage(image)
            out.append(tokens)
            image = _to_image(tokens)
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        """Last-stage tokens as (B, H/32, W/32, C)."""
        return self._stage_tokens(x, len(self.stages) - 1)[-1]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs as NCHW (or NHWC) maps, timm-style.

        ``indices`` selects stages (an int n means the last n). There is no per-stage norm (the
        official dense models do not apply one), so ``norm`` is accepted and ignored.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take = _resolve_indices(indices, len(self.stages))
        last = len(self.stages) - 1 if not (stop_early or intermediates_only) else max(take)
        tokens = self._stage_tokens(x, last)
        feats = [tokens[i] if output_fmt == "NHWC" else _to_image(tokens[i]).contiguous() for i in take]
        if intermediates_only:
            return feats
        return tokens[-1], feats

    def prune_intermediate_layers(
        self,
        indices: int | Sequence[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drops stages after the last requested one (and the head) for feature extraction."""
        take = _resolve_indices(indices, len(self.stages))
        self.stages = self.stages[: max(take) + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take


def _resolve_indices(indices: int | Sequence[int] | None, num_stages: int) -> list[int]:
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"cannot take the last {indices} of {num_stages} stages")
        return list(range(num_stages - indices, num_stages))
    take = [i % num_stages if -num_stages <= i < num_stages else i for i in indices]
    bad = [i for i in take if not 0 <= i < num_stages]
    if bad or not take:
        raise ValueError(f"stage indices must lie in [0, {num_stages}), got {list(indices)}")
    return take


# -- official checkpoints -------------------------------------------------------------------------

_OFFICIAL_KWARG_NAMES = {
    "embed_dims": "embed_dims",
    "token_dims": "token_dims",
    "downsample_ratios": "downsample_ratios",
    "kernel_size": "kernel_sizes",
    "dilations": "dilations",
    "NC_depth": "depths",
    "NC_heads": "num_heads",
    "RC_heads": "reduction_heads",
    "NC_group": "groups",
    "RC_group": "reduction_groups",
    "mlp_ratio": "mlp_ratio",
    "window_size": "window_size",
    "num_classes": "num_classes",
    "in_chans": "in_chans",
    "qkv_bias": "qkv_bias",
    "drop_path_rate": "drop_path_rate",
}
_OFFICIAL_IGNORED = {"stages", "img_size", "RC_op", "qk_scale", "norm_layer", "gamma", "SE", "relative_pos"}


def official_kwargs_to_ours(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Translates constructor arguments of the official ``ViTAE_Window_NoShift_basic`` to ours.

    Raises on settings this implementation does not reproduce (e.g. shifted windows, other token
    types, relative position bias) instead of silently building a different network.
    """
    ours: dict[str, Any] = {}
    rc_types = kwargs.get("RC_tokens_type", ["swin", "swin", "transformer", "transformer"])
    nc_types = kwargs.get("NC_tokens_type", rc_types)
    if list(rc_types) != list(nc_types) or any(t not in ("swin", "transformer") for t in rc_types):
        raise ValueError(f"unsupported token types RC={rc_types} NC={nc_types}")
    ours["window_stages"] = [t == "swin" for t in rc_types]
    for key, value in kwargs.items():
        if key in ("RC_tokens_type", "NC_tokens_type"):
            continue
        if key in _OFFICIAL_KWARG_NAMES:
            ours[_OFFICIAL_KWARG_NAMES[key]] = value
        elif key in _OFFICIAL_IGNORED:
            if key == "relative_pos" and value:
                raise ValueError("relative position bias is not part of the RSP ViTAEv2 models")
            if key == "gamma" and value:
                raise ValueError("layer scale (gamma=True) is not part of the RSP ViTAEv2 models")
            if key == "RC_op" and value != "cat":
                raise ValueError(f"only RC_op='cat' is supported, got {value!r}")
        else:
            raise ValueError(f"unknown official ViTAEv2 argument {key!r}")
    return ours


_RENAMES = [
    (re.compile(r"^layers\.(\d+)\.RC\.PRM\.convs\.(\d+)\.0\."), r"stages.\1.reduction.prm.convs.\2."),
    (re.compile(r"^layers\.(\d+)\.RC\.PCM\."), r"stages.\1.reduction.pcm."),
    (re.compile(r"^layers\.(\d+)\.RC\.attn\.attn\."), r"stages.\1.reduction.attn."),
    (re.compile(r"^layers\.(\d+)\.RC\.attn\."), r"stages.\1.reduction."),
    (re.compile(r"^layers\.(\d+)\.NC\.(\d+)\.PCM\."), r"stages.\1.blocks.\2.pcm."),
    (re.compile(r"^layers\.(\d+)\.NC\.(\d+)\."), r"stages.\1.blocks.\2."),
]
# Entries of the official checkpoints that take no part in the forward pass.
_UNUSED = re.compile(
    r"(relative_position_bias_table|relative_position_index|relative_coords_table|attn_mask)$"
)
_DENSE_NORM = re.compile(r"^norm\d+\.(weight|bias)$")


@register_converter("vitaev2")
def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module | None = None) -> dict[str, Tensor]:
    """Maps any official RSP ViTAEv2 state dict to our layout.

    Any of the classification, segmentation, detection and change detection copies.

    Strips ``module.`` and ``backbone.`` prefixes (and drops non-backbone entries when a
    ``backbone.`` part exists), drops the unused relative-position entries and dense ``norm0..3``,
    and drops ``head.*`` when ``model`` has no classifier. Keys already in our layout pass through.
    """
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if any(k.startswith("backbone.") for k in sd):
        sd = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
    has_head = model is None or isinstance(getattr(model, "head", None), nn.Linear)
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if _UNUSED.search(key) or _DENSE_NORM.match(key):
            continue
        if key.startswith("head.") and not has_head:
            continue
        for pattern, repl in _RENAMES:
            new, n = pattern.subn(repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


# -- built through timm (rsvit.timm_models registers the names with timm) -------------------------


def _create_vitaev2(variant: str, pretrained: bool = False, **kwargs: Any) -> ViTAEv2:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    ratios = kwargs.get("downsample_ratios", _DEFAULT_DOWNSAMPLE_RATIOS)
    check_output_stride(variant, kwargs.pop("output_stride", None), math.prod(ratios))
    return build_model_with_cfg(
        ViTAEv2,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def vitaev2_s(pretrained: bool = False, **kwargs: Any) -> ViTAEv2:
    """ViTAEv2-S (18.8 M parameters with a 51-class head), the RSP configuration."""
    kwargs.setdefault("num_classes", 51)
    return _create_vitaev2("vitaev2_s", pretrained=pretrained, **kwargs)
