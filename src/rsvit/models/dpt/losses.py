"""Training losses for DPT depth / height heads, all restricted to valid (non-nodata) pixels.

* :func:`scale_shift_invariant_loss`: the prediction is aligned to the target per image before
  comparing, so a relative-depth model is not penalised for an unknown scale and shift. Alignment is
  either least squares (``"lstsq"``, squared residuals) or the robust median / mean-absolute-deviation
  normalisation of both maps (``"robust"``, absolute residuals). ``trim`` drops that fraction of each
  image's largest residuals (0.2 in the trimmed variant); the kept sum is divided by ``2 M``.
* :func:`gradient_matching_loss`: L1 of the forward differences of the aligned residual at 4 scales
  (each subsampling by 2), which sharpens depth edges; only pairs of valid neighbours count.
* :func:`masked_l1_loss` and :func:`berhu_loss`: metric (e.g. nDSM in metres) regression.

Images without valid pixels contribute nothing; if a whole batch is empty the loss is an exact zero
still connected to the graph.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from rsvit.metrics.regression import apply_scale_shift, least_squares_scale_shift, prepare_depth_inputs

__all__ = [
    "BerHuLoss",
    "MaskedL1Loss",
    "ScaleShiftInvariantLoss",
    "align_prediction",
    "berhu_loss",
    "gradient_matching_loss",
    "masked_l1_loss",
    "robust_normalize",
    "scale_shift_invariant_loss",
]

Alignment = Literal["lstsq", "robust"]


def _masked_median(x: Tensor, valid: Tensor) -> Tensor:
    """Per-image lower median of the valid entries of (B, N) (invalid entries sort last)."""
    n = valid.sum(dim=1)
    filled = torch.where(valid, x, torch.full_like(x, float("inf")))
    ordered = filled.sort(dim=1).values
    idx = ((n - 1).clamp(min=0) // 2).unsqueeze(1)
    return ordered.gather(1, idx).squeeze(1).where(n > 0, torch.zeros_like(idx[:, 0], dtype=x.dtype))


def robust_normalize(x: Tensor, valid: Tensor, eps: float = 1e-6) -> Tensor:
    """``(x - median) / mean|x - median|`` per image over valid pixels; invalid pixels become 0.

    The deviation is floored at ``eps`` (only a constant map reaches it), keeping exact scale invariance.
    """
    flat, v = x.flatten(1), valid.flatten(1)
    med = _masked_median(flat, v)
    centred = torch.where(v, flat - med[:, None], torch.zeros_like(flat))
    scale = centred.abs().sum(dim=1) / v.sum(dim=1).clamp(min=1)
    return (centred / scale.clamp(min=eps)[:, None]).view_as(x)


def align_prediction(
    pred: Tensor, target: Tensor, mask: Tensor | None, alignment: Alignment = "lstsq"
) -> tuple[Tensor, Tensor, Tensor]:
    """``(aligned_pred, aligned_target, valid)`` as (B, H, W), invalid pixels zeroed.

    ``"lstsq"`` maps pred by its least-squares scale/shift onto the target (target unchanged);
    ``"robust"`` normalises both maps by their own median and mean absolute deviation.
    """
    pred, target, valid = prepare_depth_inputs(pred, target, mask)
    if alignment == "lstsq":
        scale, shift = least_squares_scale_shift(pred, target, valid)
        aligned = torch.where(valid, apply_scale_shift(pred, scale, shift), torch.zeros_like(pred))
        return aligned, target, valid
    if alignment == "robust":
        return robust_normalize(pred, valid), robust_normalize(target, valid), valid
    raise ValueError(f"alignment must be 'lstsq' or 'robust', got {alignment!r}")


def _batch_mean(per_image: Tensor, has_pixels: Tensor, anchor: Tensor) -> Tensor:
    """Mean over images with pixels; an exact zero attached to ``anchor``'s graph if there are none."""
    if not bool(has_pixels.any()):
        return anchor.sum() * 0.0
    return per_image[has_pixels].mean()


def scale_shift_invariant_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    trim: float = 0.0,
    alignment: Alignment = "lstsq",
) -> Tensor:
    """Per-image ``1/(2M) * sum of the smallest (1 - trim) M residuals``, averaged over images.

    Residuals are squared for ``"lstsq"`` and absolute for ``"robust"`` alignment.
    """
    if not 0.0 <= trim < 1.0:
        raise ValueError(f"trim must lie in [0, 1), got {trim}")
    aligned, tgt, valid = align_prediction(pred, target, mask, alignment)
    res = aligned - tgt
    res = res * res if alignment == "lstsq" else res.abs()
    flat, v = res.flatten(1), valid.flatten(1)
    n = v.sum(dim=1)
    if trim > 0:
        keep = torch.floor(n.double() * (1.0 - trim)).long()
        ordered = torch.where(v, flat, torch.full_like(flat, float("inf"))).sort(dim=1).values
        rank = torch.arange(flat.shape[1], device=flat.device)[None]
        kept = torch.where(rank < keep[:, None], ordered, torch.zeros_like(ordered)).sum(dim=1)
    else:
        kept = torch.where(v, flat, torch.zeros_like(flat)).sum(dim=1)
    per_image = kept / (2.0 * n.clamp(min=1))
    return _batch_mean(per_image, n > 0, pred)


def gradient_matching_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    scales: int = 4,
    alignment: Alignment = "lstsq",
) -> Tensor:
    """``1/M * sum_k sum (|dx R_k| + |dy R_k|)`` per image, averaged over images.

    ``R`` is the aligned residual, ``R_k`` it subsampled by ``2^k`` (k = 0..scales-1); a difference
    counts only where both neighbours are valid. ``M`` is the image's full-resolution valid count.
    """
    aligned, tgt, valid = align_prediction(pred, target, mask, alignment)
    res = aligned - tgt
    n = valid.flatten(1).sum(dim=1)
    total = torch.zeros(res.shape[0], dtype=res.dtype, device=res.device)
    for k in range(scales):
        step = 2**k
        r, v = res[:, ::step, ::step], valid[:, ::step, ::step]
        vx = v[:, :, 1:] & v[:, :, :-1]
        vy = v[:, 1:, :] & v[:, :-1, :]
        gx = torch.where(vx, (r[:, :, 1:] - r[:, :, :-1]).abs(), torch.zeros_like(r[:, :, 1:]))
        gy = torch.where(vy, (r[:, 1:, :] - r[:, :-1, :]).abs(), torch.zeros_like(r[:, 1:, :]))
        total = total + gx.sum(dim=(1, 2)) + gy.sum(dim=(1, 2))
    per_image = total / n.clamp(min=1)
    return _batch_mean(per_image, n > 0, pred)


def masked_l1_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute error over all valid pixels of the batch (metric height / depth)."""
    p, t, valid = prepare_depth_inputs(pred, target, mask)
    n = valid.sum()
    if n == 0:
        return pred.sum() * 0.0
    return torch.where(valid, (p - t).abs(), torch.zeros_like(p)).sum() / n


def berhu_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, threshold: float = 0.2) -> Tensor:
    """Reverse Huber over valid pixels: ``|r|`` up to ``c``, ``(r^2 + c^2) / (2c)`` beyond.

    ``c = threshold * max|r|`` over the batch's valid pixels (not differentiated), so small errors get
    L1's steady gradient and large ones L2's stronger push.
    """
    p, t, valid = prepare_depth_inputs(pred, target, mask)
    n = valid.sum()
    if n == 0:
        return pred.sum() * 0.0
    r = torch.where(valid, (p - t).abs(), torch.zeros_like(p))
    c = (threshold * r.max()).detach()
    if c <= 0:
        return r.sum() / n
    quad = (r * r + c * c) / (2 * c)
    return torch.where(r <= c, r, quad).where(valid, torch.zeros_like(r)).sum() / n


class ScaleShiftInvariantLoss(nn.Module):
    """``SSI(trim) + alpha * gradient matching``: the relative-depth objective (alpha 0.5, trim 0.2)."""

    def __init__(
        self, alpha: float = 0.5, trim: float = 0.2, scales: int = 4, alignment: Alignment = "robust"
    ) -> None:
        super().__init__()
        self.alpha, self.trim, self.scales, self.alignment = alpha, trim, scales, alignment

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        loss = scale_shift_invariant_loss(pred, target, mask, trim=self.trim, alignment=self.alignment)
        if self.alpha > 0:
            loss = loss + self.alpha * gradient_matching_loss(
                pred, target, mask, scales=self.scales, alignment=self.alignment
            )
        return loss


class MaskedL1Loss(nn.Module):
    """Module form of :func:`masked_l1_loss`."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return masked_l1_loss(pred, target, mask)


class BerHuLoss(nn.Module):
    """Module form of :func:`berhu_loss`."""

    def __init__(self, threshold: float = 0.2) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return berhu_loss(pred, target, mask, self.threshold)
