"""Draw DOTA polygons on images, one colour per class."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from rsvit.structures.class_names import DOTA_V2_0_CLASSES

if TYPE_CHECKING:
    from rsvit.data.detection.labels import DotaLabels
from rsvit.utils.atomic import atomic_write_bytes

__all__ = ["class_colors", "draw_labels", "draw_polygons", "save_drawing"]

# 20 well separated colours (the "tab20" family reordered so neighbouring classes contrast).
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)  # fmt: skip


def class_colors(classes: Sequence[str] = DOTA_V2_0_CLASSES) -> dict[str, tuple[int, int, int]]:
    """A fixed RGB colour per class, by position in ``classes`` (so figures are comparable)."""
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(classes)}


def draw_polygons(
    image: np.ndarray,
    polygons: np.ndarray,
    classes: Sequence[str],
    colors: Mapping[str, tuple[int, int, int]] | None = None,
    scores: Sequence[float] | None = None,
    width: int = 2,
    show_names: bool = False,
) -> np.ndarray:
    """Return a copy of ``image`` with each polygon outlined in its class colour.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8 array (not modified).
        polygons: ``(N, 8)`` corners ``(x1, y1, ..., x4, y4)`` in pixels.
        classes: ``N`` class names.
        colors: class -> RGB; defaults to :func:`class_colors` over the DOTA-v2.0 classes, with
            unknown names taking the next free palette entries.
        scores: optional ``N`` scores, written next to the first corner.
        width: outline width in pixels.
        show_names: also write the class name at the first corner.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image must be (H, W) or (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    polys = np.asarray(polygons, dtype=np.float64).reshape(-1, 8)
    if len(polys) != len(classes) or (scores is not None and len(scores) != len(classes)):
        raise ValueError("polygons, classes and scores must have the same length")
    palette = dict(class_colors() if colors is None else colors)
    for name in classes:
        if name not in palette:
            palette[name] = _PALETTE[len(palette) % len(_PALETTE)]
    canvas = Image.fromarray(arr.copy())
    draw = ImageDraw.Draw(canvas)
    for i, (poly, name) in enumerate(zip(polys, classes, strict=True)):
        pts = [(float(x), float(y)) for x, y in poly.reshape(4, 2)]
        draw.line([*pts, pts[0]], fill=palette[name], width=width, joint="curve")
        text = " ".join(
            t for t in (name if show_names else "", f"{scores[i]:.2f}" if scores is not None else "") if t
        )
        if text:
            draw.text((pts[0][0] + 2, pts[0][1] + 2), text, fill=palette[name])
    return np.asarray(canvas)


def draw_labels(
    image: np.ndarray,
    labels: DotaLabels,
    colors: Mapping[str, tuple[int, int, int]] | None = None,
    **kwargs: object,
) -> np.ndarray:
    """:func:`draw_polygons` for a :class:`~rsvit.data.detection.labels.DotaLabels`."""
    return draw_polygons(image, labels.polygons, labels.classes, colors, **kwargs)  # type: ignore[arg-type]


def save_drawing(path: str | os.PathLike[str], drawing: np.ndarray) -> None:
    """Save a drawn image (format from the suffix, e.g. ``.png``) atomically."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    Image.fromarray(drawing).save(buf, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    atomic_write_bytes(path, buf.getvalue())
