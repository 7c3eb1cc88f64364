"""Change-detection predictions written by ``rsvit predict --config ...``.

:class:`ChangePredictionWriter` writes, for every predicted pair, into ``<run folder>/predictions``:

* ``<name>.png``: date A | date B | prediction, plus the label when the data have one; the prediction
  panel then shows true positives, false positives and false negatives in their own colours
  (:func:`rsvit.viz.change.change_figure`);
* ``<name>_mask.png``: the change mask as an 8-bit grey PNG, 0 = no change, 255 = change, the coding of
  the LEVIR-CD / WHU-CD labels, so predictions can be scored like labels.

Files are written atomically; with several processes each writes the pairs it predicted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from rsvit.tasks.writers import FolderPredictionWriter
from rsvit.utils.atomic import atomic_path

__all__ = ["ChangePredictionWriter", "save_change_mask"]


def save_change_mask(path: str | os.PathLike[str], prediction: torch.Tensor | np.ndarray) -> Path:
    """Writes an ``(H, W)`` 0/1 change map as a 0/255 grey PNG, atomically."""
    from PIL import Image

    array = torch.as_tensor(prediction).detach().cpu().numpy()
    if array.ndim != 2:
        raise ValueError(f"a change mask must be (H, W), got shape {array.shape}")
    values = set(np.unique(array).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"a change mask holds 0/1 classes, got values {sorted(values)[:8]}")
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array.astype(np.uint8) * 255).save(tmp, format="PNG")
    return path


class ChangePredictionWriter(FolderPredictionWriter):
    """Writes ``<name>.png`` (A | B | prediction [| label]) and ``<name>_mask.png`` (0/255) per pair.

    Args:
        output_dir: folder (default ``<run folder>/predictions``).
        figures: write the side-by-side PNG.
        masks: write the 0/255 change mask.
    """

    columns = ("path", "prediction", "image_a", "image_b")
    optional_columns = ("mask",)
    unnamed_prefix = "pair"

    def __init__(self, output_dir: str | None = None, figures: bool = True, masks: bool = True) -> None:
        super().__init__(output_dir)
        self.figures = figures
        self.masks = masks

    def write_item(self, folder: Path, name: str, item: dict[str, Any], pl_module: L.LightningModule) -> None:
        change = item["prediction"]
        if self.figures:
            from rsvit.viz.change import change_figure, save_change_figure

            figure = change_figure(
                item["image_a"],
                item["image_b"],
                prediction=change,
                mask=item["mask"],
                title=Path(item["path"]).name,
                ignore_index=int(getattr(pl_module.hparams, "ignore_index", 255)),
            )
            self.written.append(save_change_figure(figure, folder / f"{name}.png"))
        if self.masks:
            self.written.append(save_change_mask(folder / f"{name}_mask.png", change))
