"""Turning model inputs back into pictures a person can look at."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["display_image"]


def display_image(image: torch.Tensor | np.ndarray, rgb: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """``(C, H, W)`` values -> ``(H, W, 3)`` uint8 for display (bands ``rgb``, min-max stretched)."""
    array = torch.as_tensor(image).detach().float().cpu()
    channels = [c for c in rgb if c < array.shape[0]] if array.shape[0] >= 3 else [0, 0, 0]
    shown = array[channels]
    lo, hi = float(shown.min()), float(shown.max())
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0  # already in [0, 1]: keep the true brightness
    scaled = (shown - lo) / (hi - lo) if hi > lo else torch.zeros_like(shown)
    return (scaled.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()
