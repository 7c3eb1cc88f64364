"""Figures for change detection: date A | date B | prediction | label.

When the label is known the prediction panel is an error map, so a reader sees at a glance where the
model finds real changes (true positives), invents them (false positives) or misses them (false
negatives); a plain white-on-black change map hides that distinction.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsvit.utils.atomic import save_figure
from rsvit.viz.images import display_image
from rsvit.viz.palettes import Colour

__all__ = [
    "CHANGE_COLOURS",
    "change_figure",
    "change_map",
    "error_map",
    "save_change_figure",
    "to_class_map",
]

CHANGE_COLOURS: dict[str, Colour] = {
    "true positive": (255, 255, 255),
    "false positive": (230, 40, 40),
    "false negative": (40, 200, 255),
    "true negative": (0, 0, 0),
    "ignored": (128, 128, 128),
}


def to_class_map(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(H, W)`` class indices from a class map, ``(1, H, W)`` map or ``(2, H, W)`` logits.

    Accepting logits lets callers pass the model output of one sample without an argmax of their own.
    """
    array = torch.as_tensor(values).detach().cpu()
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else array.argmax(0)
    if array.ndim != 2:
        raise ValueError(f"expected an (H, W) map or (C, H, W) logits, got shape {tuple(array.shape)}")
    if array.is_floating_point() and array.numel() and float((array - array.round()).abs().max()) > 0:
        raise ValueError("a 2-D prediction must hold class indices, got non-integer values")
    return array.to(torch.int64).numpy()


def change_map(values: torch.Tensor | np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """``(H, W, 3)`` uint8: change white, no change black, ``ignore_index`` grey."""
    classes = to_class_map(values)
    out = np.zeros((*classes.shape, 3), dtype=np.uint8)
    out[classes == 1] = CHANGE_COLOURS["true positive"]
    out[classes == ignore_index] = CHANGE_COLOURS["ignored"]
    return out


def error_map(
    prediction: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray, ignore_index: int = 255
) -> np.ndarray:
    """``(H, W, 3)`` uint8 with TP, FP, FN, TN and ignored pixels in :data:`CHANGE_COLOURS`."""
    pred = to_class_map(prediction) == 1
    target = to_class_map(mask)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and label {target.shape} differ in size")
    truth = target == 1
    out = np.zeros((*target.shape, 3), dtype=np.uint8)
    out[pred & truth] = CHANGE_COLOURS["true positive"]
    out[pred & ~truth] = CHANGE_COLOURS["false positive"]
    out[~pred & truth] = CHANGE_COLOURS["false negative"]
    out[target == ignore_index] = CHANGE_COLOURS["ignored"]
    return out


def change_figure(
    image_a: torch.Tensor | np.ndarray,
    image_b: torch.Tensor | np.ndarray,
    prediction: torch.Tensor | np.ndarray | None = None,
    mask: torch.Tensor | np.ndarray | None = None,
    title: str = "",
    ignore_index: int = 255,
) -> Any:
    """A matplotlib figure A | B | prediction | label (panels without data are left out).

    Images are ``(C, H, W)`` in [0, 1] (other ranges are min-max stretched). With both prediction and
    label the prediction panel is the :func:`error_map` and carries a legend of its colours.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    panels: list[tuple[str, np.ndarray]] = [
        ("date A", display_image(image_a)),
        ("date B", display_image(image_b)),
    ]
    with_errors = prediction is not None and mask is not None
    if prediction is not None:
        shown = (
            error_map(prediction, mask, ignore_index) if with_errors else change_map(prediction, ignore_index)
        )
        panels.append(("prediction", shown))
    if mask is not None:
        panels.append(("label", change_map(mask, ignore_index)))
    height, width = panels[0][1].shape[:2]
    panel_w = 3.5
    panel_h = max(2.0, panel_w * height / max(width, 1))
    legend_w = 2.0
    fig = Figure(figsize=(panel_w * len(panels) + legend_w, panel_h + 0.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, shown) in zip(axes, panels, strict=True):
        ax.imshow(shown, interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    if with_errors:
        entries = [(n, CHANGE_COLOURS[n]) for n in ("true positive", "false positive", "false negative")]
        entries.append(("true negative", CHANGE_COLOURS["true negative"]))
    elif prediction is not None or mask is not None:
        entries = [
            ("change", CHANGE_COLOURS["true positive"]),
            ("no change", CHANGE_COLOURS["true negative"]),
        ]
    else:
        entries = []
    if entries:
        entries.append(("ignored", CHANGE_COLOURS["ignored"]))
    handles = [Patch(facecolor=np.array(c) / 255, edgecolor="black", label=n) for n, c in entries]
    if handles:
        fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - legend_w / (panel_w * len(panels) + legend_w), 1))
    return fig


def save_change_figure(figure: Any, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Render ``figure`` to PNG and write it atomically (readers never see a half-written plot)."""
    return save_figure(figure, Path(path), format="png", dpi=dpi)
