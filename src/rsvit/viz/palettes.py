"""Class colours shared by datasets, figures and the colour tables of written rasters.

Plain Python, NumPy and torch only: the inference engine colours its GeoTIFFs with these and must not
pay for matplotlib.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["Colour", "colorize", "default_palette", "parse_colour"]

Colour = tuple[int, int, int]


def parse_colour(value: str | Sequence[int]) -> Colour:
    """``"#3C1098"``, ``"3c1098"`` or ``[60, 16, 152]`` -> ``(60, 16, 152)``."""
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) != 6:
            raise ValueError(f"colour {value!r} is not a #RRGGBB hex code")
        try:
            return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
        except ValueError as exc:
            raise ValueError(f"colour {value!r} is not a #RRGGBB hex code") from exc
    rgb = tuple(int(v) for v in value)
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"colour {list(value)!r} must be three integers in 0..255")
    return rgb  # type: ignore[return-value]


# The "tab20" qualitative scheme: 20 colours that stay distinguishable on imagery and in legends.
_TAB20 = (
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
    "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
    "#17becf", "#9edae5",
)  # fmt: skip


def default_palette(num_classes: int) -> list[Colour]:
    """Distinct display colours for index masks without a palette: tab20, or evenly spaced hues beyond
    20 classes. Plain Python on purpose: the inference engine needs it and must not pay for matplotlib."""
    if num_classes <= len(_TAB20):
        return [parse_colour(c) for c in _TAB20[:num_classes]]
    return [
        tuple(round(255 * v) for v in colorsys.hsv_to_rgb(i / num_classes, 1.0, 1.0))  # type: ignore[misc]
        for i in range(num_classes)
    ]


def colorize(
    mask: np.ndarray | torch.Tensor, palette: Sequence[Colour], ignore_colour: Colour = (0, 0, 0)
) -> np.ndarray:
    """``(H, W)`` class indices -> ``(H, W, 3)`` uint8 colours; others (ignored) get ``ignore_colour``."""
    index = torch.as_tensor(mask).cpu().numpy().astype(np.int64)
    table = np.array([*palette, ignore_colour], dtype=np.uint8)
    index = np.where((index >= 0) & (index < len(palette)), index, len(palette))
    return table[index]
