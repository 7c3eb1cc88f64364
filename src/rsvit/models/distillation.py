"""Logits and stage features of any rsvit model in one forward pass, for feature distillation.

Feature distillation needs the intermediate maps of a teacher and a student that were built without
it in mind. Two shapes of model cover what rsvit builds:

* a model with a ``backbone`` submodule (segmentors, change detectors): the backbone's output (one map or
  a list of NCHW maps) is captured with a forward hook while the whole model runs. A siamese model calls
  its backbone once per image; the maps of the calls are concatenated along the batch dimension.
* a timm-style classifier with ``forward_intermediates`` and ``forward_head`` (ResNet, Swin, ViTAEv2):
  the intermediates are asked for and the head applied to the final map, which is what ``forward`` does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["forward_with_features", "has_stage_features"]


def has_stage_features(model: nn.Module) -> bool:
    """True when :func:`forward_with_features` can read stage features of ``model``."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        return True
    return callable(getattr(model, "forward_intermediates", None)) and callable(
        getattr(model, "forward_head", None)
    )


def _as_maps(output: Any) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (list, tuple)) and all(isinstance(t, Tensor) for t in output):
        return list(output)
    raise TypeError(f"backbone output of type {type(output).__name__} is neither a tensor nor a list of them")


def forward_with_features(model: nn.Module, *inputs: Tensor) -> tuple[Tensor, list[Tensor]]:
    """``(model(*inputs), stage maps)``; the maps are NCHW, shallowest first.

    Raises:
        ValueError: the model exposes neither a ``backbone`` nor ``forward_intermediates``.
    """
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        calls: list[list[Tensor]] = []
        handle = backbone.register_forward_hook(lambda _m, _i, out: calls.append(_as_maps(out)))
        try:
            logits = model(*inputs)
        finally:
            handle.remove()
        if not calls:
            raise ValueError(f"{type(model).__name__}.backbone was not called by its forward")
        stages = [torch.cat(maps, dim=0) if len(maps) > 1 else maps[0] for maps in zip(*calls, strict=True)]
        return logits, stages
    if has_stage_features(model):
        if len(inputs) != 1:
            raise ValueError(f"{type(model).__name__} takes one input, got {len(inputs)}")
        final, stages = model.forward_intermediates(inputs[0])
        return model.forward_head(final), list(stages)
    raise ValueError(
        f"cannot read stage features of {type(model).__name__}: it has neither a 'backbone' submodule nor "
        "forward_intermediates/forward_head; set feature_weight to 0"
    )
