"""``ChangeDetectionTask``: bitemporal change detection (BIT and its RSP variants) in Lightning.

What the task adds to the network built from a :class:`~rsvit.models.ModelSpec`:

* loss: the official BIT cross-entropy (:func:`~rsvit.models.change.bit_cross_entropy`, mean over
  labelled pixels, ``ignore_index`` 255);
* optimiser from config (official BIT: SGD lr 0.01, momentum 0.9, weight decay 5e-4) with BIT's linear
  schedule ``lr = base * (1 - epoch / (max_epochs + 1))``, stepped per epoch; a run bounded by
  ``max_steps`` only gets the same rule per optimiser step;
* validation/test scores from :class:`~rsvit.metrics.change.ChangeDetectionMetrics` (one global
  confusion matrix, the BIT paper's definition), logged as ``val/F1``, ``val/IoU``,
  ``val/precision``, ``val/recall``, ``val/OA`` and the per-image means ``val/per_image/F1`` ...

Evaluation runs on whole pairs (``eval_mode="whole"``) or, for tiles larger than the training crops
(e.g. the 1024x1024 WHU-CD tiles), in overlapping windows whose logits are averaged
(``eval_mode="slide"``, :mod:`rsvit.models.sliding_window`): BIT pools its tokens over the whole input, so
a model trained on 256 px crops sees a different token statistic on a 1024 px tile. The same mode serves
``predict`` (:meth:`ChangeDetectionTask.predict_step`, written by
:class:`~rsvit.tasks.change_predict.ChangePredictionWriter`).

Model selection uses a named validation metric only (:class:`ChangeReport` ``monitor``, and the
checkpoint callback's ``monitor`` in the configs), never test scores. :class:`ChangeReport` writes
``metrics.json``, A | B | prediction | label PNGs and, at the end of fit, ``model.safetensors``
(:meth:`ChangeDetectionTask.export_model`, readable by :func:`rsvit.models.load_model`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from rsvit.metrics.change import ChangeDetectionMetrics
from rsvit.models.change import bit_cross_entropy
from rsvit.models.sliding_window import sliding_window_inference
from rsvit.models.spec import ModelSpec
from rsvit.tasks.base import BaseTask, CommandLine, Evaluation, Link
from rsvit.tasks.optim import linear_lr_factor
from rsvit.tasks.reports import RunReport
from rsvit.tasks.writers import safe_stem

__all__ = ["CHANGE_METRICS", "ChangeDetectionTask", "ChangeReport", "linear_lr_factor"]

DEFAULT_CLASSES = ("no change", "change")
# Names of the logged validation/test scores (``val/<name>``) a report or checkpoint may monitor.
CHANGE_METRICS = (
    "F1",
    "IoU",
    "precision",
    "recall",
    "OA",
    "per_image/F1",
    "per_image/IoU",
    "per_image/precision",
    "per_image/recall",
    "per_image/OA",
)


class ChangeDetectionTask(BaseTask):
    """Change detection on image pairs (see the module docstring).

    Args:
        model: a :class:`~rsvit.models.ModelSpec` (or its dict; ``task`` may be left out, default
            backbone ``bit_resnet18``) or a ready ``nn.Module`` with ``forward(a, b) -> logits``.
        num_classes, in_chans: override the spec's (linked from the data by the command line).
        weights: whole-model weights to start from (e.g. an exported ``model.safetensors``).
        backbone_weights: backbone-only weights (e.g. an RSP pretrained checkpoint for ``bit_rsp``).
        ignore_index: label ignored by loss and metrics.
        optimizer: optimiser factory from config (default: official BIT SGD).
        lr_decay: apply BIT's linear decay to 0 (``False``: constant lr).
        class_names: ``["no change", "change"]`` (linked from the data).
        mean, std: the data's normalisation (linked), to show the inputs in plots and to export.
        num_plots: validation pairs kept for the report's PNGs.
        eval_mode: ``"whole"`` (one forward per pair) or ``"slide"`` (windows of ``slide_crop`` every
            ``slide_stride`` pixels, logits averaged) for validation, test and predict.
        slide_crop, slide_stride, slide_batch_size: the sliding window (int or ``[height, width]``).
    """

    family = "change"
    default_backbone = "bit_resnet18"
    default_optimizer = ("SGD", {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4})  # the official BIT one
    progress_metric = "F1"

    def __init__(
        self,
        model: ModelSpec | dict[str, Any] | nn.Module | None = None,
        num_classes: int | None = None,
        in_chans: int | None = None,
        weights: str | None = None,
        backbone_weights: str | None = None,
        ignore_index: int = 255,
        optimizer: OptimizerCallable | None = None,
        lr_decay: bool = True,
        class_names: list[str] | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        num_plots: int = 4,
        eval_mode: Literal["whole", "slide"] = "whole",
        slide_crop: int | list[int] = 256,
        slide_stride: int | list[int] = 256,
        slide_batch_size: int = 4,
    ) -> None:
        super().__init__()
        if eval_mode not in ("whole", "slide"):
            raise ValueError(f"eval_mode must be 'whole' or 'slide', got {eval_mode!r}")
        for name, value in (("slide_crop", slide_crop), ("slide_stride", slide_stride)):
            sides = [value] if isinstance(value, int) else list(value)
            if len(sides) not in (1, 2) or min(sides) < 1:
                raise ValueError(f"{name} must be a positive int or [height, width], got {value!r}")
        crops = [slide_crop] * 2 if isinstance(slide_crop, int) else list(slide_crop)
        strides = [slide_stride] * 2 if isinstance(slide_stride, int) else list(slide_stride)
        if any(s > c for s, c in zip(strides, crops, strict=False)):
            raise ValueError(
                f"slide_stride {slide_stride} exceeds slide_crop {slide_crop}: pixels would be missed"
            )
        if slide_batch_size < 1:
            raise ValueError(f"slide_batch_size must be >= 1, got {slide_batch_size}")
        self.model = self.network_from(model, num_classes=num_classes, in_chans=in_chans)
        if isinstance(model, nn.Module):
            n_classes = (
                num_classes or getattr(model, "num_classes", None) or len(class_names or DEFAULT_CLASSES)
            )
        else:
            n_classes = self.spec.num_classes
        self.num_classes = int(n_classes)
        names = list(class_names) if class_names else list(DEFAULT_CLASSES)
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        self.class_names = names
        self.save_hyperparameters(ignore=["optimizer", "model"])
        self.record_spec()
        self.set_optimizer(optimizer)
        self.mean = list(mean) if mean is not None else None
        self.std = list(std) if std is not None else None
        self.load_weights(weights, backbone_weights)
        for stage in ("val", "test"):
            setattr(self, f"{stage}_metrics", ChangeDetectionMetrics(self.num_classes))
            setattr(self, f"{stage}_loss", MeanMetric())
        self.evaluation: dict[str, dict[str, Any]] = {}
        self.examples: list[dict[str, Any]] = []

    def forward(self, image_a: Tensor, image_b: Tensor) -> Tensor:
        """Change logits ``(B, num_classes, H, W)``."""
        return self.model(image_a, image_b)

    def _slide(self, image_a: Tensor, image_b: Tensor) -> Tensor:
        hp = self.hparams
        channels = image_a.shape[1]

        def pair_logits(stacked: Tensor) -> Tensor:
            # the window helper takes one image: both dates travel stacked along the channels
            return self.model(stacked[:, :channels], stacked[:, channels:])

        return sliding_window_inference(
            pair_logits,
            torch.cat([image_a, image_b], dim=1),
            hp.slide_crop,
            hp.slide_stride,
            self.num_classes,
            batch_size=int(hp.slide_batch_size),
        )

    def infer(self, image_a: Tensor, image_b: Tensor) -> Tensor:
        """Evaluation logits ``(B, num_classes, H, W)`` (float32) in the configured ``eval_mode``."""
        if image_a.shape != image_b.shape:
            raise ValueError(
                f"the two dates differ in shape: {tuple(image_a.shape)} vs {tuple(image_b.shape)}"
            )
        if self.hparams.eval_mode == "slide":
            return self._slide(image_a, image_b).float()
        return self(image_a, image_b).float()

    def loss(self, logits: Tensor, mask: Tensor) -> Tensor:
        return bit_cross_entropy(logits.float(), mask, ignore_index=int(self.hparams.ignore_index))

    # -- steps --------------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logits = self(batch["image_a"], batch["image_b"])
        loss = self.loss(logits, batch["mask"])
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def _undo_normalisation(self, image: Tensor) -> Tensor:
        if self.mean is None or self.std is None:
            return image
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device)[:, None, None]
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device)[:, None, None]
        return image * std + mean

    def evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        logits = self.infer(batch["image_a"], batch["image_b"])
        mask = batch["mask"]
        getattr(self, f"{stage}_loss").update(self.loss(logits, mask), weight=logits.shape[0])
        prediction = logits.argmax(1)
        getattr(self, f"{stage}_metrics").update(prediction, mask)
        if stage == "val" and not self.trainer.sanity_checking:
            for i in range(prediction.shape[0]):
                if len(self.examples) >= int(self.hparams.num_plots):
                    break
                self.examples.append(
                    {
                        "image_a": self._undo_normalisation(batch["image_a"][i]).cpu(),
                        "image_b": self._undo_normalisation(batch["image_b"][i]).cpu(),
                        "prediction": prediction[i].cpu(),
                        "mask": mask[i].cpu(),
                        "path": str(batch["path"][i]) if "path" in batch else "",
                    }
                )

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Per pair: ``path``, ``prediction`` (uint8 class map), both dates for display, ``mask`` if known."""
        image_a, image_b = batch["image_a"], batch["image_b"]
        prediction = self.infer(image_a, image_b).argmax(1).to(torch.uint8).cpu()
        n = prediction.shape[0]
        out: dict[str, Any] = {
            "path": [str(p) for p in batch.get("path", [""] * n)],
            "prediction": list(prediction),
            "image_a": list(self._undo_normalisation(image_a.float()).clamp(0, 1).cpu()),
            "image_b": list(self._undo_normalisation(image_b.float()).clamp(0, 1).cpu()),
        }
        if "mask" in batch:
            out["mask"] = list(batch["mask"].cpu())
        return out

    def compute_evaluation(self, stage: str) -> Evaluation:
        metrics: ChangeDetectionMetrics = getattr(self, f"{stage}_metrics")
        loss_metric: MeanMetric = getattr(self, f"{stage}_loss")
        scores = {k: float(v) for k, v in metrics.compute().items()}
        confusion = metrics.confmat.clone()
        loss = float(loss_metric.compute())
        metrics.reset()
        loss_metric.reset()
        entry = {
            "loss": loss if math.isfinite(loss) else None,
            **scores,
            "confusion": confusion.long().tolist(),
        }
        return Evaluation([*scores.items(), ("loss", loss)], entry)

    # -- optimisation -------------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer(p for p in self.model.parameters() if p.requires_grad)
        if not self.hparams.lr_decay:
            return optimizer
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs > 0:
            total, interval = int(max_epochs), "epoch"
        else:
            steps = self.trainer.estimated_stepping_batches
            if steps <= 0 or steps == math.inf:
                raise ValueError("the linear lr decay needs max_epochs or max_steps")
            total, interval = int(steps), "step"
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: linear_lr_factor(i, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    # -- export and command line ---------------------------------------------------------------------

    def default_preprocessing(self) -> dict[str, Any]:
        """The DataModule's preprocessing, else the task's own ``mean``/``std``."""
        found = self.datamodule_preprocessing()
        return found if found is not None else {"mean": self.mean, "std": self.std}

    def export_extra(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        """Both dates as inputs, the prediction window and the ignore index."""
        return {
            "inputs": ["image_a", "image_b"],
            # BIT pools its tokens over the whole input: predict on windows like those it was trained
            # or evaluated on (predict-raster's default window)
            "window": self.hparams.slide_crop
            if self.hparams.eval_mode == "slide"
            else (preprocessing.get("input_size") or [None, None, None])[-1],
            "ignore_index": int(self.hparams.ignore_index),
        }

    @classmethod
    def command_line(cls) -> CommandLine:
        from rsvit.datamodules.change import ChangeDataModule
        from rsvit.tasks.change_predict import ChangePredictionWriter

        return CommandLine(
            datamodule=ChangeDataModule,
            links=(
                Link("num_classes", "num_classes", on_instantiate=True),
                Link("classes", "class_names", on_instantiate=True),
                Link("ignore_index", "ignore_index"),
                Link("in_chans", "in_chans"),
                Link("mean", "mean"),
                Link("std", "std"),
            ),
            callbacks={"report": ChangeReport, "prediction_writer": ChangePredictionWriter},
        )


class ChangeReport(RunReport):
    """Writes ``metrics.json``, validation A | B | prediction | label PNGs and ``model.safetensors``.

    Reads ``evaluation`` and ``examples`` of :class:`ChangeDetectionTask` (see
    :class:`~rsvit.tasks.reports.RunReport`); the best validation entry is chosen by ``monitor``
    (higher is better).

    Args:
        filename: report name inside the run folder.
        monitor: validation score deciding the best entry (one of :data:`CHANGE_METRICS`).
        export: file name of the exported model ('' to skip).
        plots: write the validation PNGs (``val_predictions/``).
    """

    summary_drop = ("confusion",)

    def __init__(
        self,
        filename: str = "metrics.json",
        monitor: str = "F1",
        export: str = "model.safetensors",
        plots: bool = True,
    ) -> None:
        if monitor not in CHANGE_METRICS:
            raise ValueError(
                f"monitor must be a validation score, one of {', '.join(CHANGE_METRICS)}; got {monitor!r}"
            )
        super().__init__(filename, monitor, export, plots)

    def header(self, pl_module: L.LightningModule) -> dict[str, Any]:
        return {"classes": list(getattr(pl_module, "class_names", DEFAULT_CLASSES)), "monitor": self.monitor}

    def draw_examples(self, folder: Path, pl_module: L.LightningModule) -> None:
        from rsvit.viz.change import change_figure, save_change_figure

        ignore = int(getattr(pl_module.hparams, "ignore_index", 255))
        for i, ex in enumerate(getattr(pl_module, "examples", [])):
            figure = change_figure(
                ex["image_a"].clamp(0, 1),
                ex["image_b"].clamp(0, 1),
                prediction=ex["prediction"],
                mask=ex["mask"],
                title=Path(ex["path"]).name,
                ignore_index=ignore,
            )
            save_change_figure(figure, folder / f"{i:02d}_{safe_stem(ex['path'], i)}.png")
