"""Fitting converted weights to a model built for other bands or without a classifier.

Two differences between a checkpoint and a model are expected rather than errors:
- the model reads more (or fewer) bands than the checkpoint's RGB stem: the input convolutions named by
  the timm ``first_conv`` config are adapted the way timm adapts pretrained stems;
- the model is a feature extractor: the checkpoint's classifier (timm ``classifier`` config) is ignored.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from timm.models import adapt_input_conv
from torch import nn

__all__ = ["fit_to_model"]


def _configured_networks(model: nn.Module) -> Iterator[tuple[str, dict]]:
    """(key prefix, timm pretrained config) of every sub-network that carries one."""
    for name, module in model.named_modules():
        cfg = getattr(module, "pretrained_cfg", None)
        if isinstance(cfg, dict) and cfg:
            yield (f"{name}." if name else ""), cfg


def _names(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def fit_to_model(
    state_dict: dict[str, torch.Tensor], model: nn.Module
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Returns (state dict, adapted input-conv keys, ignored classifier keys)."""
    target = model.state_dict()
    out = dict(state_dict)
    adapted: list[str] = []
    ignored: list[str] = []
    for prefix, cfg in _configured_networks(model):
        for conv in _names(cfg.get("first_conv")):
            key = f"{prefix}{conv}.weight"
            have, want = out.get(key), target.get(key)
            if have is None or want is None or have.ndim != 4 or have.shape == want.shape:
                continue
            if have.shape[0] == want.shape[0] and have.shape[2:] == want.shape[2:]:
                with torch.no_grad():
                    out[key] = adapt_input_conv(want.shape[1], have)
                adapted.append(key)
        for head in _names(cfg.get("classifier")):
            head_prefix = f"{prefix}{head}."
            if any(k.startswith(head_prefix) for k in target):
                continue
            # Unmatched entries keep the checkpoint's own name, with or without the wrapper prefix.
            for key in [k for k in out if k.startswith((head_prefix, f"{head}."))]:
                del out[key]
                ignored.append(key)
    return out, adapted, ignored
