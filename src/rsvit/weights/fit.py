"""Fitting converted weights to a model built for other bands or without a classifier.

Two differences between a checkpoint and a model are expected rather than errors:
- the model reads more (or fewer) bands than the checkpoint's RGB stem: the input convolutions named by
  the timm ``first_conv`` config are adapted the way timm adapts pretrained stems;
- the model is a feature extractor: the checkpoint's classifier (timm ``classifier`` config) is ignored.

Plain input convolutions follow timm's rule (:func:`timm.models.adapt_input_conv`): the RGB kernels are
repeated over the new bands and everything is scaled by ``3 / n``. So an ``n``-band input whose bands sharing
an RGB kernel (bands ``c``, ``c + 3``, ...) add up to ``n / 3`` times that RGB band gives exactly the RGB
model's activations; e.g. ``[R, G, B, R, G, B]`` for six bands, or ``4/3 * [R/2, G, B, R/2]`` for four.

Weight-standardised convolutions (the BiT ResNet stem of DPT-Hybrid, timm ``StdConv2d``) standardise their
kernel per output filter in every forward pass, so timm's rule does not carry over: the ``3 / n`` rescale is
undone, and repeating the RGB kernel an incomplete number of times changes each filter's mean and std, i.e.
shifts and rescales every filter differently. :func:`adapt_standardized_conv` adapts the *standardised*
kernel instead: complete repetitions of the RGB kernel, and zeros for the ``n mod 3`` bands left over. That
kernel has zero mean and the same norm in every filter, so the layer's standardisation only rescales all
filters alike, which the GroupNorm after the stem removes. Property: the ``n``-band model on RGB repeated
``n // 3`` times followed by *any* remaining bands equals the RGB model on RGB (up to the eps of the
normalisations), e.g. a four-band model on ``[R, G, B, NIR]`` starts out as the RGB model and learns the
NIR kernel in training. Fewer than three bands use timm's rule on the standardised kernel (the sum for one
band), which loads but does not reproduce the RGB model.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from timm.layers import StdConv2d, StdConv2dSame
from timm.models import adapt_input_conv
from torch import nn

__all__ = ["adapt_standardized_conv", "fit_to_model", "is_weight_standardized"]


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


def is_weight_standardized(module: nn.Module | None) -> bool:
    """Whether a convolution standardises its kernel in the forward pass (timm StdConv, DPT's legacy one)."""
    flagged = bool(getattr(module, "weight_standardized", False))
    return flagged or isinstance(module, StdConv2d | StdConv2dSame)


def adapt_standardized_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """Kernel of a weight-standardised input conv for ``in_chans`` bands (rule in the module docstring).

    Complete repetitions of the standardised RGB kernel, zeros for the leftover bands.
    """
    out_c, have, kh, kw = weight.shape
    w = weight.detach().double()
    std, mean = torch.std_mean(w, dim=(1, 2, 3), keepdim=True, correction=0)
    standardized = (w - mean) / std.clamp_min(torch.finfo(torch.float64).tiny)
    if in_chans < have:
        return adapt_input_conv(in_chans, standardized.float()).to(weight.dtype)
    repeats = in_chans // have
    out = torch.zeros(out_c, in_chans, kh, kw, dtype=torch.float64)
    out[:, : repeats * have] = standardized.repeat(1, repeats, 1, 1)
    return out.to(weight.dtype)


def _submodule(model: nn.Module, weight_key: str) -> nn.Module | None:
    try:
        return model.get_submodule(weight_key.rsplit(".", 1)[0])
    except AttributeError:
        return None


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
                    if is_weight_standardized(_submodule(model, key)):
                        out[key] = adapt_standardized_conv(want.shape[1], have)
                    else:
                        out[key] = adapt_input_conv(want.shape[1], have)
                adapted.append(key)
        for head in _names(cfg.get("classifier")):
            head_prefix = f"{prefix}{head}."
            if any(k.startswith(head_prefix) for k in target):
                continue
            # Unmatched entries keep the checkpoint's own name, with or without the wrapper prefix; an
            # unprefixed name the model itself has (a wrapper's own head of the same name) is not one.
            bare = f"{head}."
            for key in [
                k for k in out if k.startswith(head_prefix) or (k.startswith(bare) and k not in target)
            ]:
                del out[key]
                ignored.append(key)
    return out, adapted, ignored
