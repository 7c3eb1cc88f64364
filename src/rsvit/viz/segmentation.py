"""Figures for semantic segmentation: image, ground truth and prediction in the class colours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rsvit.viz.palettes import Colour, colorize

__all__ = ["segmentation_figure"]


def segmentation_figure(
    image: np.ndarray,
    classes: Sequence[str],
    palette: Sequence[Colour],
    mask: torch.Tensor | np.ndarray | None = None,
    prediction: torch.Tensor | np.ndarray | None = None,
    title: str = "",
    ignore_colour: Colour = (0, 0, 0),
) -> Any:
    """Side-by-side panels (image | mask | prediction) with a legend of the classes and their colours."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels: list[tuple[str, np.ndarray]] = [("image", image)]
    if mask is not None:
        panels.append(("ground truth", colorize(mask, palette, ignore_colour)))
    if prediction is not None:
        panels.append(("prediction", colorize(prediction, palette, ignore_colour)))
    height, width = image.shape[:2]
    panel_w = 4.0
    panel_h = max(2.0, panel_w * height / max(width, 1))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(panel_w * len(panels) + 2.2, panel_h + 0.6), squeeze=False
    )
    for ax, (name, shown) in zip(axes[0], panels, strict=True):
        ax.imshow(shown, interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    handles = [
        Patch(facecolor=np.array(c) / 255.0, edgecolor="black", label=n)
        for n, c in zip(classes, palette, strict=True)
    ]
    if mask is not None:
        handles.append(Patch(facecolor=np.array(ignore_colour) / 255.0, edgecolor="black", label="ignored"))
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / (panel_w * len(panels) + 2.2), 1))
    return fig
