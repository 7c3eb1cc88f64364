"""One factory for every backbone: a module mapping an image batch to a list of NCHW feature maps.

Our ViTAEv2 and any timm model with ``forward_intermediates`` (ResNet, Swin, ViT, the ViT-hybrid of
DPT, ...) share the same contract, so heads never need to know which backbone they sit on:

>>> bb = create_backbone("swin_t", out_indices=(0, 1, 2, 3), in_chans=4)
>>> feats = bb(torch.zeros(1, 4, 256, 256))  # list of (B, C_i, H / r_i, W / r_i)
>>> bb.channels, bb.reductions
([96, 192, 384, 768], [4, 8, 16, 32])

Any input size works: inputs are zero-padded at the bottom and right to a multiple of the network's
deepest stride, so map ``i`` has ``ceil(H / r_max) * r_max / r_i`` rows for every backbone alike.

More than three bands: the stem is built for ``in_chans``; when weights for three bands are loaded
into it, every input convolution is adapted the way timm adapts pretrained stems (the RGB kernels are
repeated over the new bands and rescaled by ``3 / in_chans`` so activations keep their magnitude).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models import adapt_input_conv
from torch import Tensor, nn

from rsvit.errors import ModelConfigError
from rsvit.models.backbones.fused_linear import fuse_linear_layers

__all__ = [
    "BACKBONE_ALIASES",
    "Backbone",
    "adapt_input_convs",
    "create_backbone",
    "list_backbones",
    "resolve_backbone_name",
]

# Short names used throughout rsvit configs -> timm model names.
BACKBONE_ALIASES: dict[str, str] = {
    "vitaev2_s": "vitaev2_s",
    "resnet50": "resnet50",
    "resnet18": "resnet18",
    "swin_t": "swin_tiny_patch4_window7_224",
    "vit_b": "vit_base_patch16_224",
    "vit_l": "vit_large_patch16_384",
    "vit_hybrid": "vit_base_r50_s16_384",
}

# Models whose token grid is fixed at construction unless told otherwise.
_DYNAMIC_SIZE_KWARGS: dict[str, dict[str, Any]] = {
    "swin": {"dynamic_img_size": True},
    "vit_": {"dynamic_img_size": True, "dynamic_img_pad": True},
}


class Backbone(nn.Module):
    """Multi-scale feature extractor around a timm-style model.

    Attributes:
        channels: channels of each returned map.
        reductions: stride of each returned map relative to the input.
        model: the wrapped network (classifier removed), reachable for weight loading.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int], name: str) -> None:
        super().__init__()
        info = model.feature_info
        self.name = name
        self.out_indices = list(out_indices)
        self.channels = [int(info[i]["num_chs"]) for i in self.out_indices]
        self.reductions = [int(info[i]["reduction"]) for i in self.out_indices]
        self.in_chans = _in_chans(model)
        # Inputs are padded (bottom/right, zeros) to a multiple of the deepest stride of the network.
        self.pad_multiple = max(int(i["reduction"]) for i in info)
        if hasattr(model, "prune_intermediate_layers"):
            model.prune_intermediate_layers(self.out_indices, prune_norm=True, prune_head=True)
        self.model = model

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        return dict(getattr(self.model, "pretrained_cfg", {}) or {})

    @property
    def weights_family(self) -> str | None:
        return getattr(self.model, "weights_family", None) or _family_of(self.model)

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"backbone {self.name!r} expects (B, {self.in_chans}, H, W) input, got {tuple(x.shape)}; "
                f"rebuild it with in_chans={x.shape[1] if x.ndim == 4 else '?'} or select matching bands"
            )
        pad_h, pad_w = (-x.shape[2]) % self.pad_multiple, (-x.shape[3]) % self.pad_multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.model.forward_intermediates(
            x, indices=self.out_indices, intermediates_only=True, output_fmt="NCHW"
        )


def _in_chans(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ValueError("cannot find the input convolution of the backbone")


def _family_of(model: nn.Module) -> str | None:
    name = type(model).__name__.lower()
    for family in ("resnet", "swin", "vision", "vitaev2"):
        if family in name:
            return "vit" if family == "vision" else family
    return None


def list_backbones() -> list[str]:
    """Short names of the backbones rsvit configures (any other timm model name also works)."""
    return sorted(BACKBONE_ALIASES)


def resolve_backbone_name(name: str) -> str:
    """The timm name of a short rsvit name or timm name; unknown names raise with the closest matches."""
    if name in BACKBONE_ALIASES:
        return BACKBONE_ALIASES[name]
    if timm.is_model(name):
        return name
    candidates = list(dict.fromkeys([*BACKBONE_ALIASES, *timm.list_models()]))
    close = difflib.get_close_matches(name, candidates, n=4, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ModelConfigError(f"unknown backbone {name!r}.{hint} `rsvit models` lists the configured backbones.")


def _default_out_indices(info: list[dict[str, Any]]) -> list[int]:
    """Pyramid stages for hierarchical models; four evenly spaced blocks for plain ViTs."""
    reductions = [int(i["reduction"]) for i in info]
    if len(set(reductions)) > 1:
        return [i for i, r in enumerate(reductions) if r >= 4][-4:]
    n = len(info)
    return sorted({round((k + 1) * n / 4) - 1 for k in range(4)})


def create_backbone(
    name: str,
    out_indices: Sequence[int] | None = None,
    in_chans: int = 3,
    **kwargs: Any,
) -> Backbone:
    """Builds a backbone by short name (see :func:`list_backbones`) or any timm model name.

    Args:
        name: e.g. ``"vitaev2_s"``, ``"resnet50"``, ``"swin_t"``, ``"vit_b"``, ``"vit_hybrid"``.
        out_indices: which feature levels to return, in the model's ``feature_info`` numbering
            (ResNet: 0 is the stride-2 stem, 1..4 the stages; Swin/ViTAEv2: stages 0..3; ViT: blocks).
            Default: the stride-4..32 pyramid, or four evenly spaced ViT blocks.
        in_chans: input bands.
        **kwargs: passed to the model constructor (e.g. ``drop_path_rate``).

    Weights are loaded separately (``rsvit.weights.load_into``) so that any checkpoint format works.
    Linear layers run through :func:`rsvit.models.backbones.fused_linear.fuse_linear_layers` (same
    parameters and keys; faster on CPU).
    """
    if in_chans < 1:
        raise ModelConfigError(f"in_chans must be positive, got {in_chans}")
    timm_name = resolve_backbone_name(name)
    family_kwargs: dict[str, Any] = {}
    for prefix, extra in _DYNAMIC_SIZE_KWARGS.items():
        if timm_name.startswith(prefix):
            family_kwargs = dict(extra)
    model = timm.create_model(timm_name, pretrained=False, in_chans=in_chans, **{**family_kwargs, **kwargs})
    if not hasattr(model, "forward_intermediates"):
        raise ModelConfigError(
            f"timm model {timm_name!r} has no forward_intermediates and cannot serve as backbone"
        )
    fuse_linear_layers(model)
    info = model.feature_info
    if out_indices is None:
        out_indices = _default_out_indices(info)
    out_indices = [i % len(info) if i < 0 else i for i in out_indices]
    bad = [i for i in out_indices if not 0 <= i < len(info)]
    if bad or not out_indices:
        raise ModelConfigError(
            f"out_indices {list(out_indices)} out of range for {name!r} ({len(info)} levels)"
        )
    return Backbone(model, out_indices, name)


def adapt_input_convs(
    state_dict: dict[str, Tensor], model: nn.Module, in_chans: int, prefix: str = ""
) -> dict[str, Tensor]:
    """Adapts every input convolution in ``state_dict`` (from 3-band weights) to ``in_chans`` bands.

    Uses the ``first_conv`` entries of the model's pretrained config, like timm does when it loads
    pretrained weights into a model with another band count.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv")
    if first is None:
        return state_dict
    names = (first,) if isinstance(first, str) else tuple(first)
    out = dict(state_dict)
    for conv_name in names:
        key = f"{prefix}{conv_name}.weight"
        weight = out.get(key)
        if weight is not None and weight.ndim == 4 and weight.shape[1] != in_chans:
            with torch.no_grad():
                out[key] = adapt_input_conv(in_chans, weight)
    return out
