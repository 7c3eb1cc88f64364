"""Segmentation pictures and predictions: prediction PNGs and the ``rsvit predict`` writer.

Everything is written atomically (temporary file, then rename), so a reader never sees half a file.
:class:`SegmentationPredictionWriter` writes for every predicted image ``predictions/<name>.png``
(image | prediction with legend) and ``predictions/<name>_mask.png`` (class indices);
:func:`save_prediction_png` also draws the validation figures of
:class:`~rsvit.tasks.segmentation.SegmentationReport`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from rsvit.tasks.writers import FolderPredictionWriter
from rsvit.utils.atomic import atomic_path, save_figure
from rsvit.viz.palettes import Colour, default_palette
from rsvit.viz.segmentation import segmentation_figure

__all__ = [
    "SegmentationPredictionWriter",
    "save_index_png",
    "save_prediction_png",
]


def save_prediction_png(
    path: str | os.PathLike[str],
    image: np.ndarray | torch.Tensor,
    prediction: np.ndarray | torch.Tensor,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]] | None = None,
    mask: np.ndarray | torch.Tensor | None = None,
    title: str = "",
) -> Path:
    """Image ``(H, W, 3)`` uint8 beside its prediction (and ground truth) in palette colours, with legend."""
    import matplotlib.pyplot as plt

    colours: list[Colour] = [tuple(int(v) for v in c) for c in (palette or default_palette(len(classes)))]  # type: ignore[misc]
    image_array = torch.as_tensor(image).cpu().numpy()
    fig = segmentation_figure(image_array, classes, colours, mask=mask, prediction=prediction, title=title)
    try:
        return save_figure(fig, path, format="png", dpi=100)
    finally:
        plt.close(fig)


def save_index_png(path: str | os.PathLike[str], labels: np.ndarray | torch.Tensor) -> Path:
    """Class indices ``(H, W)`` as an 8-bit (or 16-bit for > 256 classes) grey PNG, atomically."""
    from PIL import Image

    array = torch.as_tensor(labels).cpu().numpy()
    array = array.astype(np.uint8) if array.max(initial=0) < 256 else array.astype(np.uint16)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    return path


class SegmentationPredictionWriter(FolderPredictionWriter):
    """Writes ``<name>.png`` (image | prediction, legend) and ``<name>_mask.png`` (indices) per image.

    Args:
        output_dir: folder (default ``<run folder>/predictions``).
        side_by_side: write the colour PNG with the image and legend.
        index_masks: write the class-index PNG.
    """

    columns = ("path", "prediction", "image")

    def __init__(
        self, output_dir: str | None = None, side_by_side: bool = True, index_masks: bool = True
    ) -> None:
        super().__init__(output_dir)
        self.side_by_side = side_by_side
        self.index_masks = index_masks

    def write_item(self, folder: Path, name: str, item: dict[str, Any], pl_module: L.LightningModule) -> None:
        path, labels = item["path"], item["prediction"]
        if self.side_by_side:
            self.written.append(
                save_prediction_png(
                    folder / f"{name}.png",
                    item["image"],
                    labels,
                    pl_module.class_names,
                    getattr(pl_module, "palette", None),
                    title=Path(path).name,
                )
            )
        if self.index_masks:
            self.written.append(save_index_png(folder / f"{name}_mask.png", labels))
