"""Segmentation run reports: ``metrics.json``, prediction PNGs and the exported ``model.safetensors``.

Everything lands in the run folder (``trainer.log_dir``), written atomically (temporary file, then
rename), so a reader never sees half a file:

* :class:`SegmentationReport`: ``metrics.json`` (last and best validation, history, test), PNGs of the
  kept validation images (image | ground truth | prediction, palette colours, legend) in
  ``val_predictions/``, and at the end of fit ``model.safetensors``
  (:meth:`~rsvit.tasks.segmentation.SegmentationTask.export_model`);
* :class:`SegmentationPredictionWriter`: for every predicted image ``predictions/<name>.png``
  (image | prediction with legend) and ``predictions/<name>_mask.png`` (class indices).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.utilities import rank_zero_warn

from rsvit.atomic import atomic_path, save_figure
from rsvit.data.segmentation import Colour, default_palette, segmentation_figure
from rsvit.tasks.callbacks import run_dir, write_json

__all__ = [
    "SegmentationPredictionWriter",
    "SegmentationReport",
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


def _safe_name(path: str, index: int) -> str:
    stem = Path(path).stem if path else f"image_{index:04d}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


class SegmentationReport(Callback):
    """Writes ``metrics.json``, validation prediction PNGs and (end of fit) ``model.safetensors``.

    Reads what :class:`~rsvit.tasks.segmentation.SegmentationTask` keeps in ``evaluation`` and
    ``examples``. Only the main process writes. History and best are saved in checkpoints.

    Args:
        filename: report name inside the run folder.
        monitor: validation entry deciding the best evaluation (``mIoU`` or ``mF1``).
        export: file name of the exported model ('' to skip).
        plots: write the validation prediction PNGs.
    """

    def __init__(
        self,
        filename: str = "metrics.json",
        monitor: str = "mIoU",
        export: str = "model.safetensors",
        plots: bool = True,
    ) -> None:
        self.filename = filename
        self.monitor = monitor
        self.export = export
        self.plots = plots
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.last: dict[str, Any] = {}
        self.exported: Path | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.best = state_dict.get("best")

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        report = {
            "classes": list(getattr(pl_module, "class_names", [])),
            "val": self.last.get("val"),
            "best_val": self.best,
            "history": self.history,
            "test": self.last.get("test"),
            "model": str(self.exported) if self.exported else None,
        }
        write_json(run_dir(trainer) / self.filename, report)

    def _plots(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self.plots and trainer.is_global_zero):
            return
        folder = run_dir(trainer) / "val_predictions"
        for i, example in enumerate(getattr(pl_module, "examples", [])):
            save_prediction_png(
                folder / f"{i:02d}_{_safe_name(example['path'], i)}.png",
                example["image"],
                example["prediction"],
                pl_module.class_names,
                getattr(pl_module, "palette", None),
                mask=example["mask"],
                title=Path(example["path"]).name,
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        result = getattr(pl_module, "evaluation", {}).get("val")
        if result is None:
            return
        self.last["val"] = result
        if trainer.state.fn == "fit":
            entry = {k: v for k, v in result.items() if k not in ("per_class", "confusion")}
            self.history = [h for h in self.history if h["step"] != entry["step"]] + [entry]
            score = entry.get(self.monitor)
            best = None if self.best is None else self.best.get(self.monitor)
            if score is not None and (best is None or score > best):
                self.best = entry
        else:
            self._plots(trainer, pl_module)
        self._write(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._plots(trainer, pl_module)
        if self.export and trainer.is_global_zero and hasattr(pl_module, "export_model"):
            if getattr(pl_module, "spec", None) is None:
                rank_zero_warn("model given as nn.Module without a ModelSpec: model.safetensors not exported")
            else:
                self.exported = pl_module.export_model(run_dir(trainer) / self.export)
        self._write(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        result = getattr(pl_module, "evaluation", {}).get("test")
        if result is None:
            return
        self.last["test"] = result
        self._write(trainer, pl_module)


class SegmentationPredictionWriter(BasePredictionWriter):
    """Writes ``<name>.png`` (image | prediction, legend) and ``<name>_mask.png`` (indices) per image.

    Args:
        output_dir: folder (default ``<run folder>/predictions``).
        side_by_side: write the colour PNG with the image and legend.
        index_masks: write the class-index PNG.
    """

    def __init__(
        self, output_dir: str | None = None, side_by_side: bool = True, index_masks: bool = True
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.side_by_side = side_by_side
        self.index_masks = index_masks
        self.written: list[Path] = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not prediction:
            return
        folder = Path(self.output_dir) if self.output_dir else run_dir(trainer) / "predictions"
        for i, (path, labels, image) in enumerate(
            zip(prediction["path"], prediction["prediction"], prediction["image"], strict=True)
        ):
            name = _safe_name(path, batch_idx * 1000 + i)
            if self.side_by_side:
                self.written.append(
                    save_prediction_png(
                        folder / f"{name}.png",
                        image,
                        labels,
                        pl_module.class_names,
                        getattr(pl_module, "palette", None),
                        title=Path(path).name,
                    )
                )
            if self.index_masks:
                self.written.append(save_index_png(folder / f"{name}_mask.png", labels))
