"""Figures for scene classification: one image with its class and, optionally, the predicted one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["classification_figure"]


def classification_figure(
    image: torch.Tensor | np.ndarray,
    label: str | None = None,
    prediction: str | None = None,
    rgb: Sequence[int] = (0, 1, 2),
) -> Any:
    """A matplotlib figure of a ``(C, H, W)`` image, min-max stretched, titled with its class names.

    ``rgb`` picks the displayed bands (band 0 in grey for fewer than three bands).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    image = torch.as_tensor(image).detach().float().cpu()
    channels = [c for c in rgb if c < image.shape[0]] if image.shape[0] >= 3 else [0]
    shown = image[channels].permute(1, 2, 0).numpy()
    lo, hi = float(shown.min()), float(shown.max())
    shown = (shown - lo) / (hi - lo) if hi > lo else np.zeros_like(shown)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray")
    ax.set_axis_off()
    title = f"label: {label}" if label is not None else ""
    if prediction is not None:
        title += f"\nprediction: {prediction}"
    ax.set_title(title.strip())
    fig.tight_layout()
    return fig
