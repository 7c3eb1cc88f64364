"""Encoder-decoder segmentation model: backbone -> decode head (+ optional auxiliary head).

Mirrors the inference semantics of the official RSP segmentation models (mmsegmentation 0.21
``EncoderDecoder``): logits from the decode head are bilinearly resized to the input size
(``align_corners=False``); sliding-window mode averages window logits
(see :mod:`rsvit.models.sliding_window`).
Losses live in the training task, not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rsvit.models.backbones import create_backbone
from rsvit.models.dpt.head import DPTHead
from rsvit.models.heads.fcn import FCNHead
from rsvit.models.heads.upernet import UperNetHead
from rsvit.models.registry import register_task_model
from rsvit.models.sliding_window import sliding_window_inference
from rsvit.models.spec import ModelSpec
from rsvit.weights.convert import (
    StateDict,
    convert_state_dict,
    guess_family,
    infer_family,
    register_converter,
)


class Segmentor(nn.Module):
    """Backbone + decode head (+ auxiliary head used only for training).

    Args:
        backbone: module whose ``forward(x)`` returns a list of NCHW maps (see ``rsvit.models.backbones``).
        decode_head: module mapping that list to logits (``num_classes`` attribute required), e.g.
            :class:`~rsvit.models.heads.UperNetHead`.
        auxiliary_head: optional second head for deep supervision, e.g. :class:`~rsvit.models.heads.FCNHead`.
        align_corners: used when resizing head logits to the input size.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decode_head: nn.Module,
        auxiliary_head: nn.Module | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        num_classes = getattr(decode_head, "num_classes", None)
        if not isinstance(num_classes, int):
            raise TypeError("decode_head must have an int attribute 'num_classes'")
        aux_classes = getattr(auxiliary_head, "num_classes", num_classes)
        if auxiliary_head is not None and aux_classes != num_classes:
            raise ValueError(f"auxiliary head predicts {aux_classes} classes, decode head {num_classes}")
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head
        self.align_corners = align_corners

    weights_family = "mmseg"  # official checkpoints of this model type are mmseg EncoderDecoders

    @property
    def num_classes(self) -> int:
        return self.decode_head.num_classes

    def extract_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone feature maps (finest first)."""
        if x.dim() != 4:
            raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(x.shape)}")
        features = self.backbone(x)
        if isinstance(features, torch.Tensor) or not isinstance(features, Sequence):
            raise TypeError(f"the backbone must return a list of NCHW maps, got {type(features).__name__}")
        return list(features)

    def _to_input_size(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whole-image inference: ``(B, C, H, W)`` image -> ``(B, num_classes, H, W)`` logits."""
        return self._to_input_size(self.decode_head(self.extract_features(x)), x)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode and auxiliary logits, both at input size, for training (the backbone runs once).

        The auxiliary logits come from the auxiliary head, else from a decode head with its own auxiliary
        output (DPT's, on the penultimate fusion map); ``None`` when there is neither.
        """
        features = self.extract_features(x)
        if self.auxiliary_head is None and hasattr(self.decode_head, "forward_with_aux"):
            main, aux = self.decode_head.forward_with_aux(features)
            main = self._to_input_size(main, x)
            return main, None if aux is None else self._to_input_size(aux, x)
        main = self._to_input_size(self.decode_head(features), x)
        if self.auxiliary_head is None:
            return main, None
        return main, self._to_input_size(self.auxiliary_head(features), x)

    def slide_inference(
        self,
        x: torch.Tensor,
        crop_size: int | Sequence[int],
        stride: int | Sequence[int],
        num_classes: int | None = None,
        batch_size: int = 4,
    ) -> torch.Tensor:
        """Sliding-window inference equal to the official "slide" test mode (logits averaged over overlaps).

        Windows smaller than the crop at the image border are never produced (the last window is shifted
        back inside the image); images smaller than the crop are processed whole. See
        :func:`rsvit.models.sliding_window.sliding_window_inference`.
        """
        num_classes = self.num_classes if num_classes is None else num_classes
        return sliding_window_inference(self, x, crop_size, stride, num_classes, batch_size=batch_size)


def build_upernet_segmentor(
    backbone: nn.Module,
    num_classes: int,
    channels: int = 512,
    aux_channels: int | None = 256,
    aux_index: int = 2,
    pool_scales: Sequence[int] = (1, 2, 3, 6),
    dropout: float = 0.1,
) -> Segmentor:
    """UperNet on all backbone maps + FCN auxiliary head on map ``aux_index``, as in the official configs.

    ``backbone.channels`` gives the head input widths. ``aux_channels=None`` builds no auxiliary head.
    """
    in_channels = [int(c) for c in backbone.channels]
    decode_head = UperNetHead(in_channels, num_classes, channels, pool_scales=pool_scales, dropout=dropout)
    aux = None
    if aux_channels is not None:
        aux = FCNHead(in_channels[aux_index], aux_channels, num_classes, in_index=aux_index, dropout=dropout)
    return Segmentor(backbone, decode_head, aux)


@register_task_model("segmentation", "upernet", default=True)
def _upernet_from_spec(spec: ModelSpec) -> Segmentor:
    backbone = create_backbone(spec.backbone, in_chans=spec.in_chans, **spec.backbone_kwargs)
    return build_upernet_segmentor(backbone, spec.num_classes, **spec.head_kwargs)


@register_task_model("segmentation", "dpt")
def _dpt_segmentor_from_spec(spec: ModelSpec) -> Segmentor:
    backbone = create_backbone(spec.backbone, in_chans=spec.in_chans, **spec.backbone_kwargs)
    head = DPTHead(backbone.channels, task="segmentation", num_classes=spec.num_classes, **spec.head_kwargs)
    return Segmentor(backbone, head)


@register_task_model("segmentation", "fcn")
def _fcn_segmentor_from_spec(spec: ModelSpec) -> Segmentor:
    backbone = create_backbone(spec.backbone, in_chans=spec.in_chans, **spec.backbone_kwargs)
    head = FCNHead(
        backbone.channels[-1], num_classes=spec.num_classes, **{"channels": 256, **spec.head_kwargs}
    )
    return Segmentor(backbone, head)


# Official mmsegmentation head names -> ours (prefix renames; module names after the prefix are shared).
_HEAD_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        (r"^decode_head\.conv_seg\.", "decode_head.classifier."),
        (r"^decode_head\.psp_modules\.(\d+)\.1\.", r"decode_head.ppm.branches.\1."),
        (r"^decode_head\.bottleneck\.", "decode_head.ppm.fuse."),
        (r"^decode_head\.fpn_bottleneck\.", "decode_head.fuse."),
        (r"^auxiliary_head\.conv_seg\.", "auxiliary_head.classifier."),
        (r"^auxiliary_head\.conv_cat\.", "auxiliary_head.concat_conv."),
    )
)

BackboneFilter = Callable[..., dict[str, torch.Tensor]]


def convert_mmseg_head_key(key: str) -> str:
    """Rename one official ``decode_head.*`` / ``auxiliary_head.*`` key (UperNet / FCN) to our layout."""
    for pattern, repl in _HEAD_RENAMES:
        new, n = pattern.subn(repl, key)
        if n:
            return new
    return key


def _backbone_target(model: Segmentor | None) -> tuple[str, nn.Module | None]:
    """Key prefix of the backbone network inside our segmentor, and that network (if known).

    ``create_backbone`` wraps the network as ``Backbone.model``, so its weights sit under
    ``backbone.model.``; a bare network passed as backbone sits under ``backbone.``.
    """
    if model is None:
        return "backbone.model.", None
    inner = getattr(model.backbone, "model", None)
    if isinstance(inner, nn.Module):
        return "backbone.model.", inner
    return "backbone.", model.backbone


def convert_mmseg_state_dict(
    state_dict: Mapping[str, Any],
    model: Segmentor | None = None,
    backbone_filter: BackboneFilter | None = None,
) -> dict[str, Any]:
    """Map an official mmsegmentation ``EncoderDecoder`` state dict (UperNet + FCN) to our keys.

    Args:
        state_dict: the bare state dict (the ``state_dict`` entry of an mmcv checkpoint); a leading
            ``module.`` (data-parallel wrapper) is removed.
        model: the segmentor the result is meant for; only its backbone layout is looked at. Without it
            the backbone is assumed to come from ``rsvit.models.backbones.create_backbone`` (weights under
            ``backbone.model.``).
        backbone_filter: ``fn(backbone_state_dict, model=network) -> dict`` mapping the ``backbone.*``
            entries to the network's own keys; default: the ViTAEv2 ``checkpoint_filter_fn`` (strips the
            prefix, drops the unused ``norm0..3`` / relative-position entries, renames the rest).

    ``decode_head.*`` / ``auxiliary_head.*`` keys are renamed to our module names (see
    :func:`convert_mmseg_head_key`); anything else passes through unchanged so that a strict load reports it.
    """
    backbone: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key.startswith("backbone."):
            backbone[key] = value
        else:
            out[convert_mmseg_head_key(key)] = value
    if not backbone:
        return out
    if backbone_filter is None:
        from rsvit.models.backbones.vitaev2 import checkpoint_filter_fn

        backbone_filter = checkpoint_filter_fn
    prefix, network = _backbone_target(model)
    converted = backbone_filter(backbone, model=network)
    return {**{prefix + k: v for k, v in converted.items()}, **out}


@register_converter("mmseg")
def _convert_mmseg(state_dict: StateDict, model: nn.Module | None) -> StateDict:
    """Official mmseg ``EncoderDecoder`` (UperNet + FCN) -> :class:`Segmentor`.

    The ``backbone.*`` part goes through the converter of the backbone's own family.
    """

    def backbone_filter(sd: StateDict, model: nn.Module | None = None) -> StateDict:
        family = (infer_family(model) if model is not None else None) or guess_family(sd) or "vitaev2"
        return convert_state_dict(sd, family, model)

    return convert_mmseg_state_dict(state_dict, model=model, backbone_filter=backbone_filter)
