"""Run reports: ``metrics.json``, confusion-matrix PNGs and each family's figures, written atomically.

Everything lands in the run folder (``trainer.log_dir``, e.g. ``runs/scene/rsscn7_quick/version_0``)
next to the checkpoints and the ``config.yaml`` that LightningCLI saves, so one folder tells what was
run and what came out. :class:`RunReport` is the report of every family (each subclasses it for its
figures); :class:`MetricsReport` is scene classification's, with confusion matrices as its figures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from rsvit.utils.atomic import atomic_write_text, save_figure

__all__ = ["MetricsReport", "RunReport", "plot_confusion_matrix", "run_dir", "write_json", "write_text"]


def run_dir(trainer: L.Trainer) -> Path:
    """The folder of this run: the logger's version folder, else ``default_root_dir``.

    Call it on every process: ``trainer.log_dir`` broadcasts from the main one.
    """
    return Path(trainer.log_dir or trainer.default_root_dir)


def write_text(path: Path, text: str) -> None:
    """Writes ``text`` beside ``path`` and renames it into place (readers never see half a file)."""
    atomic_write_text(path, text)


def write_json(path: Path, data: Any) -> None:
    """Writes ``data`` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def plot_confusion_matrix(
    confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Row-normalised confusion matrix (rows: true class) with counts, saved as PNG atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(confusion, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    n = len(classes)
    size = max(4.0, 0.35 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=list(classes), rotation=90, fontsize=8 if n > 20 else 10)
    ax.set_yticks(range(n), labels=list(classes), fontsize=8 if n > 20 else 10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    colour = "white" if share[i, j] > 0.5 else "black"
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color=colour)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    try:
        return save_figure(fig, path, format="png", dpi=100)
    finally:
        plt.close(fig)


class RunReport(Callback):
    """The run report of every family: ``metrics.json``, evaluation figures, ``model.safetensors``.

    Reads what the task keeps in ``evaluation`` (``{"val": ..., "test": ...}``, each entry with ``epoch``
    and ``step``) and ``examples``. During fit every validation joins ``history`` (one entry per
    :attr:`history_key`) and the best one by :meth:`score` (higher is better) is kept; history and best
    travel in checkpoints, so a resumed run continues the same report. Figures are drawn after fit, after a
    stand-alone validation and after a test; the model is exported at the end of fit through the task's
    ``export_model``. Only the main process writes, atomically. Subclasses draw the figures
    (:meth:`draw_examples`, or :meth:`draw` for every stage) and may rank entries differently
    (:meth:`score`).

    Args:
        filename: report name inside the run folder.
        monitor: validation entry deciding the best evaluation.
        export: file name of the exported model ('' to skip).
        plots: write the figures (``val_predictions/``).
    """

    summary_drop: tuple[str, ...] = ("per_class", "confusion")  # bulky fields left out of the history
    history_key: str = "step"  # a new validation replaces the history entry with the same value of this key

    def __init__(
        self,
        filename: str = "metrics.json",
        monitor: str = "",
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

    def score(self, entry: dict[str, Any]) -> float | None:
        """How good a validation entry is (higher is better; ``None``: not comparable)."""
        value = entry.get(self.monitor)
        return None if value is None else float(value)

    def header(self, pl_module: L.LightningModule) -> dict[str, Any]:
        """Fields written at the top of the report."""
        return {"classes": list(getattr(pl_module, "class_names", []))}

    def draw(self, folder: Path, pl_module: L.LightningModule, stage: str) -> None:
        """Draws the figures of ``stage`` (``"val"`` or ``"test"``); by default the validation examples."""
        if stage == "val":
            self.draw_examples(folder / "val_predictions", pl_module)

    def draw_examples(self, folder: Path, pl_module: L.LightningModule) -> None:
        """Draws the kept validation examples into ``folder`` (nothing by default)."""

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = run_dir(trainer)  # on every process (a collective), before the rank check
        if not trainer.is_global_zero:
            return
        report = {
            **self.header(pl_module),
            "val": self.last.get("val"),
            "best_val": self.best,
            "history": self.history,
            "test": self.last.get("test"),
            "model": str(self.exported) if self.exported else None,
        }
        write_json(folder / self.filename, report)

    def _draw(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        folder = run_dir(trainer)  # on every process (a collective), before the rank check
        if self.plots and trainer.is_global_zero:
            self.draw(folder, pl_module, stage)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        result = getattr(pl_module, "evaluation", {}).get("val")
        if result is None:
            return
        self.last["val"] = result
        if trainer.state.fn == "fit":
            entry = {k: v for k, v in result.items() if k not in self.summary_drop}
            key = self.history_key
            self.history = [h for h in self.history if h[key] != entry[key]] + [entry]
            score = self.score(entry)
            best = None if self.best is None else self.score(self.best)
            if score is not None and (best is None or score > best):
                self.best = entry
        else:
            self._draw(trainer, pl_module, "val")
        self._write(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer, pl_module, "val")
        folder = run_dir(trainer)
        if self.export and trainer.is_global_zero and hasattr(pl_module, "export_model"):
            if getattr(pl_module, "spec", None) is None:
                rank_zero_warn("model given as nn.Module without a ModelSpec: model.safetensors not exported")
            else:
                self.exported = pl_module.export_model(folder / self.export)
        self._write(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        result = getattr(pl_module, "evaluation", {}).get("test")
        if result is None:
            return
        self.last["test"] = result
        self._draw(trainer, pl_module, "test")
        self._write(trainer, pl_module)


class MetricsReport(RunReport):
    """Scene classification's report: one history entry per epoch, confusion matrices as figures.

    Writes ``metrics.json`` (last and best validation, history, test), ``confusion_{val,test}.png`` and,
    at the end of fit, ``model.safetensors`` (see :class:`RunReport`).

    Args:
        filename: report name inside the run folder.
        monitor: validation entry that decides the best epoch.
        confusion: write ``confusion_{val,test}.png``.
        export: file name of the exported model ('' to skip).
    """

    history_key = "epoch"

    def __init__(
        self,
        filename: str = "metrics.json",
        monitor: str = "acc1",
        confusion: bool = True,
        export: str = "model.safetensors",
    ) -> None:
        super().__init__(filename, monitor, export, plots=confusion)

    @property
    def confusion(self) -> bool:
        """Whether the confusion-matrix PNGs are written."""
        return self.plots

    def score(self, entry: dict[str, Any]) -> float:
        return float(entry[self.monitor])  # a monitor the task does not compute is an error here

    def draw(self, folder: Path, pl_module: L.LightningModule, stage: str) -> None:
        result = self.last.get(stage)
        if not result:
            return
        title = f"{stage}: top-1 {100 * result['acc1']:.2f} % (epoch {result['epoch']})"
        plot_confusion_matrix(
            result["confusion"], pl_module.class_names, folder / f"confusion_{stage}.png", title
        )
