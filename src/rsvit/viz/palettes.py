"""Class colours shared by datasets, figures and the colour tables of written rasters.

Plain Python, NumPy and torch only: the inference engine colours its GeoTIFFs with these and must not
pay for matplotlib.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["Colour", "colorize", "default_palette", "is_ambiguous", "land_cover_colour", "parse_colour"]

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


# Land-cover colours a map reader expects, by keyword in the class name (first match wins): water blue,
# vegetation green, buildings red, roads grey, bare land tan... Order matters: "low vegetation" is grass.
_LAND_COVER: tuple[tuple[tuple[str, ...], str], ...] = (
    (("water", "sea", "river", "lake", "ocean", "pond", "wetland"), "#1f6fd1"),
    (("low veg", "grass", "meadow", "pasture", "shrub"), "#9bd45a"),
    (("crop", "farm", "agricult", "field"), "#f0e040"),
    (("veget", "tree", "forest", "wood", "park"), "#2a9a3a"),
    (("building", "roof", "house", "urban", "built"), "#d0312d"),
    (("road", "street", "impervious", "pavement", "parking", "highway"), "#646464"),
    (("car", "vehicle", "truck"), "#f08c00"),
    (("land", "bare", "soil", "sand", "desert", "rock", "barren"), "#b4825a"),
    (("snow", "ice", "cloud"), "#f2f2f2"),
    (("shadow",), "#2c2c7a"),
    (("clutter", "background", "unlabel", "unknown", "other", "void"), "#202020"),
)  # fmt: skip

#: two class colours closer than this (RGB distance) are hard to tell apart on a map
MIN_COLOUR_DISTANCE = 80.0


def _hues(num_classes: int) -> list[Colour]:
    return [
        tuple(round(255 * v) for v in colorsys.hsv_to_rgb(i / num_classes, 1.0, 1.0))  # type: ignore[misc]
        for i in range(num_classes)
    ]


def land_cover_colour(name: str) -> Colour | None:
    """The conventional map colour of a land-cover class name (by keyword), or ``None``."""
    lowered = name.lower()
    for keywords, colour in _LAND_COVER:
        if any(k in lowered for k in keywords):
            return parse_colour(colour)
    return None


def default_palette(num_classes: int, names: Sequence[str] | None = None) -> list[Colour]:
    """Distinct display colours for index masks without a palette.

    Tab20, or evenly spaced hues beyond 20 classes. With class ``names``, recognised land-cover classes
    get the colours map readers expect (water blue, vegetation green, see :func:`land_cover_colour`) and
    the others distinct tab20 colours.
    Plain Python on purpose: the inference engine needs it and must not pay for matplotlib.
    """
    base = [parse_colour(c) for c in _TAB20] if num_classes <= len(_TAB20) else _hues(num_classes)
    if names is None or len(names) != num_classes:
        return base[:num_classes]
    wanted = [land_cover_colour(n) for n in names]
    taken: set[Colour] = set()
    chosen: list[Colour | None] = []
    for colour in wanted:
        chosen.append(colour if colour is not None and colour not in taken else None)
        if colour is not None:
            taken.add(colour)
    spare = (
        c for c in base if c not in taken and all(_distance(c, t) >= MIN_COLOUR_DISTANCE / 2 for t in taken)
    )
    fallback = iter(base)
    return [c if c is not None else next(spare, None) or next(fallback) for c in chosen]


def _distance(a: Sequence[int], b: Sequence[int]) -> float:
    return sum((int(x) - int(y)) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5


def is_ambiguous(palette: Sequence[Sequence[int]], min_distance: float = MIN_COLOUR_DISTANCE) -> bool:
    """Whether two colours of ``palette`` are too close to tell apart on a map (e.g. gold and yellow)."""
    return any(_distance(a, b) < min_distance for i, a in enumerate(palette) for b in palette[i + 1 :])


def colorize(
    mask: np.ndarray | torch.Tensor, palette: Sequence[Colour], ignore_colour: Colour = (0, 0, 0)
) -> np.ndarray:
    """``(H, W)`` class indices -> ``(H, W, 3)`` uint8 colours; others (ignored) get ``ignore_colour``."""
    index = torch.as_tensor(mask).cpu().numpy().astype(np.int64)
    table = np.array([*palette, ignore_colour], dtype=np.uint8)
    index = np.where((index >= 0) & (index < len(palette)), index, len(palette))
    return table[index]
