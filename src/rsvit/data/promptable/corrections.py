"""Correction clicks for simulated interactive segmentation (the training loop of the Segment Anything paper).

After a prediction, the next click lies uniformly in the *error region*: the valid pixels where the
thresholded prediction and the target disagree. A click in a missed target pixel (false negative) is a
foreground point (label 1), one in a wrongly predicted pixel (false positive) a background point (label 0).
A prediction without error gets a padding point (label -1), which the prompt encoder ignores, so every
prompt of a batch keeps the same number of points.

The rounds that follow the first prediction either add such a click or only feed the previous mask logits
back (*mask-only* rounds): :func:`round_schedule` says which. Everything random is drawn from the given
``torch.Generator`` (or torch's global one), a fixed number of draws per call, so a seed fixes the result.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["error_region_points", "round_schedule"]


def error_region_points(
    pred: Tensor, target: Tensor, valid: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """One click per mask, drawn uniformly from its error region.

    Args:
        pred: ``(N, H, W)`` boolean predictions.
        target: ``(N, H, W)`` boolean targets.
        valid: ``(H, W)`` or ``(N, H, W)`` pixels that count (ignored labels and padding get no click).
        generator: CPU generator of the draw (``None``: torch's global one).

    Returns:
        coordinates ``(N, 1, 2)`` float32 as ``(x, y)`` pixel centres and labels ``(N, 1)`` int64
        (1 in a false negative, 0 in a false positive, -1 when the prediction has no error).
    """
    pred, target = pred.bool(), target.bool()
    valid = valid.bool().expand_as(target)
    missed = (target & ~pred & valid).flatten(1)
    error = missed | (pred & ~target & valid).flatten(1)
    n, width = target.shape[0], target.shape[-1]
    count = error.sum(1)
    draw = torch.rand(n, generator=generator, dtype=torch.float64).to(error.device)
    k = (draw * count).floor().long().clamp(max=(count - 1).clamp(min=0))
    # index of the (k+1)-th error pixel = how many positions hold at most k error pixels so far
    index = (error.cumsum(1) <= k[:, None]).sum(1).clamp(max=error.shape[1] - 1)
    rows = torch.arange(n, device=error.device)
    labels = torch.where(count > 0, missed[rows, index].long(), torch.full_like(index, -1))
    coords = torch.stack([index % width, index // width], dim=1).float() * (count > 0)[:, None]
    return coords[:, None], labels[:, None]


def round_schedule(
    correction_rounds: int, mask_only_rounds: int, generator: torch.Generator | None = None
) -> list[bool]:
    """The rounds after the first prediction: ``True`` adds a click, ``False`` only feeds the mask back.

    The last round is mask-only when there is any; the other mask-only rounds take random places among
    the rest (as in the paper: 8 click rounds, one mask-only round among them and one at the end).
    """
    total = correction_rounds + mask_only_rounds
    schedule = [True] * total
    if mask_only_rounds:
        schedule[-1] = False
        if mask_only_rounds > 1:
            for place in torch.randperm(total - 1, generator=generator)[: mask_only_rounds - 1].tolist():
                schedule[place] = False
    return schedule
