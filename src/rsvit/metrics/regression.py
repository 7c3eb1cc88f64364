"""Depth / height metrics on valid pixels: AbsRel, RMSE, log10 and the delta thresholds.

Two protocols share one code path:

* **metric** (``align=False``): the prediction is compared as it is, for models that output metres.
* **relative** (``align=True``): every image's prediction is first mapped by the least-squares scale and
  shift that best fits the target on that image's valid pixels, so a model whose output is only
  defined up to an affine map (e.g. a DPT depth head) can be scored.

Pixel sets: RMSE and MAE use every valid pixel (so ground at height 0 counts). The ratio metrics
(AbsRel, log10, delta) are undefined for a zero target, so they use the valid pixels whose target is
``> min_value``, with the prediction clamped to ``>= min_value`` (as the usual depth evaluation does).

:class:`DepthMetrics` accumulates per-image sums and pixel counts, so adding its states across
processes (``dist_reduce_fx="sum"``) gives exactly the single-process result.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "DEPTH_METRIC_NAMES",
    "DepthMetrics",
    "apply_scale_shift",
    "depth_metric_sums",
    "depth_metrics",
    "least_squares_scale_shift",
]

DEPTH_METRIC_NAMES = ("abs_rel", "rmse", "mae", "log10", "delta1", "delta2", "delta3")

_SUM_KEYS = ("sq_err", "abs_err", "n_all", "abs_rel", "log10", "delta1", "delta2", "delta3", "n_ratio")


def _as_bhw(x: Tensor, name: str) -> Tensor:
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"{name} must be (B, H, W), (B, 1, H, W) or (H, W), got shape {tuple(x.shape)}")
    return x


def prepare_depth_inputs(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(B, H, W) pred/target with invalid entries zeroed (no NaN can leak into sums or gradients)."""
    pred, target = _as_bhw(pred, "pred"), _as_bhw(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    valid = torch.isfinite(target) & torch.isfinite(pred)
    if mask is not None:
        mask = _as_bhw(mask, "mask")
        if mask.shape != target.shape:
            raise ValueError(f"mask {tuple(mask.shape)} and target {tuple(target.shape)} differ in shape")
        valid = valid & mask.bool()
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    return torch.where(valid, pred, zero), torch.where(valid, target, zero.to(target.dtype)), valid


def least_squares_scale_shift(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1e-12
) -> tuple[Tensor, Tensor]:
    """Per-image ``(scale, shift)``, each (B,), minimising ``sum_valid (scale * pred + shift - target)^2``.

    Closed form from the 2x2 normal equations; differentiable, so a loss can back-propagate through
    it. An image whose valid prediction is constant gets scale 0 and shift = mean target; an image
    without valid pixels gets scale 1 and shift 0.
    """
    pred, target, valid = prepare_depth_inputs(pred, target, mask)
    dtype = pred.dtype
    # Centred sums in float64: the raw normal equations lose most digits in float32.
    pred, target = pred.double(), target.double()
    n = valid.double().sum(dim=(1, 2))
    nz = n.clamp(min=1.0)
    mean_p = pred.sum(dim=(1, 2)) / nz
    mean_t = target.sum(dim=(1, 2)) / nz
    zero = torch.zeros((), dtype=torch.float64, device=pred.device)
    cp = torch.where(valid, pred - mean_p[:, None, None], zero)
    ct = torch.where(valid, target - mean_t[:, None, None], zero)
    var = (cp * cp).sum(dim=(1, 2))
    cov = (cp * ct).sum(dim=(1, 2))
    ok = var > eps * (mean_p * mean_p * n).clamp(min=1.0)
    scale = torch.where(ok, cov / torch.where(ok, var, torch.ones_like(var)), torch.zeros_like(var))
    shift = mean_t - scale * mean_p
    empty = n == 0
    scale = torch.where(empty, torch.ones_like(scale), scale).to(dtype)
    shift = torch.where(empty, torch.zeros_like(shift), shift).to(dtype)
    return scale, shift


def apply_scale_shift(pred: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """``scale * pred + shift`` per image, for pred of shape (B, H, W) or (B, 1, H, W)."""
    view = (-1,) + (1,) * (pred.ndim - 1)
    return pred * scale.view(view) + shift.view(view)


def depth_metric_sums(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    align: bool = False,
    min_value: float = 1e-3,
) -> dict[str, Tensor]:
    """Per-image float64 sums (each (B,)) from which every metric follows; see the module docstring.

    Keys: ``sq_err``, ``abs_err``, ``n_all`` (all valid pixels); ``abs_rel``, ``log10``, ``delta1..3``,
    ``n_ratio`` (valid pixels with target > ``min_value``).
    """
    pred = _as_bhw(pred, "pred").detach().double()
    target = _as_bhw(target, "target").detach().double()
    if align:
        scale, shift = least_squares_scale_shift(pred, target, mask)
        pred = apply_scale_shift(pred, scale, shift)
    pred, target, valid = prepare_depth_inputs(pred, target, mask)
    err = pred - target
    dims = (1, 2)
    out = {
        "sq_err": torch.where(valid, err * err, 0.0).sum(dims),
        "abs_err": torch.where(valid, err.abs(), 0.0).sum(dims),
        "n_all": valid.double().sum(dims),
    }
    pos = valid & (target > min_value)
    t = torch.where(pos, target, 1.0)
    p = torch.where(pos, pred.clamp(min=min_value), 1.0)
    ratio = torch.maximum(p / t, t / p)
    out["abs_rel"] = torch.where(pos, (p - t).abs() / t, 0.0).sum(dims)
    out["log10"] = torch.where(pos, (torch.log10(p) - torch.log10(t)).abs(), 0.0).sum(dims)
    for k in (1, 2, 3):
        out[f"delta{k}"] = (pos & (ratio < 1.25**k)).double().sum(dims)
    out["n_ratio"] = pos.double().sum(dims)
    return out


def _finalise(sums: dict[str, Tensor], per_image: bool) -> dict[str, Tensor]:
    """Metrics from summed (pixel-pooled) or per-image sums; NaN where no pixel qualified."""

    def div(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(b > 0, a / b.clamp(min=1.0), torch.full_like(a, math.nan))

    n_all, n_ratio = sums["n_all"], sums["n_ratio"]
    res = {
        "rmse": div(sums["sq_err"], n_all).sqrt(),
        "mae": div(sums["abs_err"], n_all),
        "abs_rel": div(sums["abs_rel"], n_ratio),
        "log10": div(sums["log10"], n_ratio),
    }
    for k in (1, 2, 3):
        res[f"delta{k}"] = div(sums[f"delta{k}"], n_ratio)
    if per_image:
        res = {k: v.nanmean() if (~v.isnan()).any() else v.new_tensor(math.nan) for k, v in res.items()}
    return {k: res[k] for k in DEPTH_METRIC_NAMES}


def depth_metrics(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    align: bool = False,
    min_value: float = 1e-3,
    reduction: Literal["pixel", "image"] = "pixel",
) -> dict[str, Tensor]:
    """Metrics of one batch as float64 scalars.

    ``reduction="pixel"`` pools all valid pixels of the batch; ``"image"`` computes each image's
    metric and averages over images (images without qualifying pixels are left out).
    """
    sums = depth_metric_sums(pred, target, mask, align=align, min_value=min_value)
    if reduction == "pixel":
        return _finalise({k: v.sum() for k, v in sums.items()}, per_image=False)
    if reduction == "image":
        return _finalise(sums, per_image=True)
    raise ValueError(f"reduction must be 'pixel' or 'image', got {reduction!r}")


class DepthMetrics(Metric):
    """Accumulates depth / height metrics over batches (and processes) as sums.

    ``reduction="pixel"`` pools pixels over the whole evaluation set; ``"image"`` averages per-image
    metrics (the usual depth-benchmark convention). Both are derived from summed states, so DDP
    reduction is exact. ``align=True`` gives the relative (scale-and-shift aligned) protocol.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        align: bool = False,
        min_value: float = 1e-3,
        reduction: Literal["pixel", "image"] = "pixel",
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if reduction not in ("pixel", "image"):
            raise ValueError(f"reduction must be 'pixel' or 'image', got {reduction!r}")
        self.align = align
        self.min_value = min_value
        self.reduction = reduction
        for key in _SUM_KEYS:
            self.add_state(key, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        # Per-image metrics are summed over images that had pixels, with their counts.
        for key in DEPTH_METRIC_NAMES:
            self.add_state(f"img_{key}", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("img_n_all", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("img_n_ratio", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        sums = depth_metric_sums(pred, target, mask, align=self.align, min_value=self.min_value)
        for key in _SUM_KEYS:
            setattr(self, key, getattr(self, key) + sums[key].sum().to(self.device))
        per = _finalise(sums, per_image=False)  # per-image values, (B,) each
        for key in DEPTH_METRIC_NAMES:
            v = per[key]
            setattr(self, f"img_{key}", getattr(self, f"img_{key}") + torch.nan_to_num(v, nan=0.0).sum())
        self.img_n_all = self.img_n_all + (sums["n_all"] > 0).double().sum()
        self.img_n_ratio = self.img_n_ratio + (sums["n_ratio"] > 0).double().sum()

    def compute(self) -> dict[str, Tensor]:
        if self.reduction == "pixel":
            return _finalise({key: getattr(self, key) for key in _SUM_KEYS}, per_image=False)
        out = {}
        for key in DEPTH_METRIC_NAMES:
            n = self.img_n_all if key in ("rmse", "mae") else self.img_n_ratio
            total = getattr(self, f"img_{key}")
            out[key] = total / n if n > 0 else total.new_tensor(math.nan)
        return out
