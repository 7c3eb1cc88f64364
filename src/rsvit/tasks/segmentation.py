"""``SegmentationTask``: UperNet (+ FCN auxiliary) training and evaluation in Lightning, RSP recipe.

What the task adds to the network built from a :class:`~rsvit.models.ModelSpec`:

* loss: cross-entropy with an ignore index on the decode logits plus ``aux_weight`` (0.4) times the
  same loss on the auxiliary logits, both at input resolution. ``avg_non_ignore=False`` averages over
  all pixels, ignored ones counting zero, as mmseg 0.21 (used by RSP) does;
* optimiser from config (official: AdamW lr 6e-5, wd 0.01 for Swin/ViTAEv2; SGD lr 0.01 for ResNet)
  with weight decay switched off for parameter names containing ``no_decay_keywords``;
* poly schedule per optimiser step, ``lr = (base - min_lr) * (1 - t / T) ** power + min_lr``, with an
  optional linear warm-up from ``warmup_ratio * lr`` over ``warmup_iters`` steps (mmcv's rule);
* evaluation on whole images or by sliding window (logits averaged over overlaps, crop/stride from
  config), optionally with horizontal-flip test-time augmentation (probabilities averaged);
* metrics from one confusion matrix (torchmetrics, synchronised across processes): per class IoU, F1,
  precision, recall, and their means (classes absent from both labels and predictions are left out of
  the means, as mmseg does), overall accuracy; the paper reports mF1 on Potsdam and mIoU on iSAID.

:meth:`SegmentationTask.export_model` writes the network with
:func:`rsvit.models.save_model` (spec, classes, mean/std, palette), the file ``rsvit predict-raster``
reads; :class:`SegmentationReport` calls it at the end of fit and writes ``metrics.json`` and the
validation PNGs (image | ground truth | prediction, palette colours, legend) in ``val_predictions/``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from rsvit.metrics.segmentation import confusion_metrics
from rsvit.models.sliding_window import sliding_window_inference
from rsvit.models.spec import ModelSpec
from rsvit.tasks.base import BaseTask, CommandLine, Evaluation, Link, json_safe
from rsvit.tasks.optim import poly_lr_factor, weight_decay_groups
from rsvit.tasks.reports import RunReport
from rsvit.tasks.segmentation_predict import save_prediction_png
from rsvit.tasks.writers import safe_stem

__all__ = ["SegmentationReport", "SegmentationTask", "poly_lr_factor", "segmentation_loss"]

OFFICIAL_NO_DECAY = ("absolute_pos_embed", "relative_position_bias_table", "norm")
_MOVED = {
    "confusion_metrics": ("rsvit.metrics.segmentation.confusion_metrics", confusion_metrics),
    "decay_parameter_groups": ("rsvit.tasks.optim.weight_decay_groups", weight_decay_groups),
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        new, value = _MOVED[name]
        warnings.warn(f"rsvit.tasks.segmentation.{name} moved to {new}", DeprecationWarning, stacklevel=2)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def segmentation_loss(
    logits: Tensor,
    target: Tensor,
    aux_logits: Tensor | None = None,
    aux_weight: float = 0.4,
    ignore_index: int = 255,
    avg_non_ignore: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy of the decode logits + ``aux_weight`` x that of the auxiliary logits.

    Returns ``(total, {"decode": ..., "aux": ...})``. With ``avg_non_ignore`` the mean runs over the
    labelled pixels (0 when there are none), otherwise over all pixels.
    """

    def ce(scores: Tensor) -> Tensor:
        per_pixel = F.cross_entropy(scores.float(), target, ignore_index=ignore_index, reduction="none")
        if avg_non_ignore:
            return per_pixel.sum() / (target != ignore_index).sum().clamp(min=1)
        return per_pixel.mean()

    parts = {"decode": ce(logits)}
    total = parts["decode"]
    if aux_logits is not None and aux_weight:
        parts["aux"] = ce(aux_logits)
        total = total + aux_weight * parts["aux"]
    return total, parts


class SegmentationTask(BaseTask):
    """Semantic segmentation (see the module docstring).

    Args:
        model: a :class:`~rsvit.models.ModelSpec` (or its dict; ``task`` may be left out) or a ready
            ``nn.Module`` mapping images to logits (then ``forward_with_aux`` is used when present).
        num_classes, in_chans: override the spec's (linked from the data by the command line).
        weights: whole-model weights to start from (official mmseg checkpoint or an exported
            ``model.safetensors``), loaded non-strictly (e.g. another class count keeps the rest).
        backbone_weights: backbone-only weights (e.g. an RSP pretrained checkpoint).
        ignore_index: label ignored by loss and metrics.
        aux_weight: weight of the auxiliary loss (official 0.4).
        avg_non_ignore: average the loss over labelled pixels only (mmseg 0.21: ``False``).
        optimizer: optimiser factory from config.
        no_decay_keywords: parameter-name fragments without weight decay.
        poly_power, min_lr, warmup_iters, warmup_ratio: the schedule (official AdamW configs: 1.0, 0,
            1500, 1e-6; SGD configs: 0.9, 1e-4, 0).
        eval_mode: ``"whole"`` or ``"slide"``; slide_crop / slide_stride / slide_batch_size: sliding window.
        tta_hflip: average the probabilities of the image and its horizontal mirror.
        class_names, palette: linked from the data (reports, plots, exported metadata).
        num_plots: validation images kept for the report's prediction PNGs.
    """

    family = "segmentation"
    default_backbone = "resnet50"
    # the official Swin/ViTAEv2 optimiser
    default_optimizer = ("AdamW", {"lr": 6e-5, "betas": (0.9, 0.999), "weight_decay": 0.01})
    progress_metric = "mIoU"

    def __init__(
        self,
        model: ModelSpec | dict[str, Any] | None = None,
        num_classes: int | None = None,
        in_chans: int | None = None,
        weights: str | None = None,
        backbone_weights: str | None = None,
        ignore_index: int = 255,
        aux_weight: float = 0.4,
        avg_non_ignore: bool = True,
        optimizer: OptimizerCallable | None = None,
        no_decay_keywords: list[str] | None = list(OFFICIAL_NO_DECAY),  # noqa: B006 - shown by the CLI
        poly_power: float = 1.0,
        min_lr: float = 0.0,
        warmup_iters: int = 1500,
        warmup_ratio: float = 1e-6,
        eval_mode: Literal["whole", "slide"] = "whole",
        slide_crop: int | list[int] = 512,
        slide_stride: int | list[int] = 384,
        slide_batch_size: int = 4,
        tta_hflip: bool = False,
        class_names: list[str] | None = None,
        palette: list[list[int]] | None = None,
        num_plots: int = 4,
    ) -> None:
        super().__init__()
        if eval_mode not in ("whole", "slide"):
            raise ValueError(f"eval_mode must be 'whole' or 'slide', got {eval_mode!r}")
        self.model = self.network_from(model, num_classes=num_classes, in_chans=in_chans)
        n_classes = (
            num_classes or getattr(model, "num_classes", None)
            if isinstance(model, nn.Module)
            else self.spec.num_classes
        )
        if not isinstance(n_classes, int):
            raise ValueError("give num_classes for a model without a 'num_classes' attribute")
        if class_names is not None and len(class_names) != n_classes:
            raise ValueError(f"{len(class_names)} class names for {n_classes} classes")
        if palette is not None and len(palette) != n_classes:
            raise ValueError(f"palette has {len(palette)} colours for {n_classes} classes")
        self.save_hyperparameters(ignore=["optimizer", "model"])
        self.record_spec()
        self.num_classes = int(n_classes)
        self.set_optimizer(optimizer)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        self.palette = [list(map(int, c)) for c in palette] if palette else None
        self.load_weights(weights, backbone_weights)
        for stage in ("val", "test"):
            confusion = MulticlassConfusionMatrix(
                self.num_classes, ignore_index=ignore_index, validate_args=False
            )
            setattr(self, f"{stage}_confusion", confusion)
            setattr(self, f"{stage}_loss", MeanMetric())
        self.evaluation: dict[str, dict[str, Any]] = {}
        self.examples: list[dict[str, Any]] = []

    # -- inference -------------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Whole-image logits ``(B, num_classes, H, W)``."""
        return self.model(x)

    def _slide(self, x: Tensor) -> Tensor:
        hp = self.hparams
        return sliding_window_inference(
            self.model, x, hp.slide_crop, hp.slide_stride, self.num_classes, batch_size=hp.slide_batch_size
        )

    def infer(self, x: Tensor) -> Tensor:
        """Evaluation scores ``(B, num_classes, H, W)`` in the configured mode.

        Logits, or log-probabilities when flip test-time augmentation averages probabilities.
        """
        run: Callable[[Tensor], Tensor] = self._slide if self.hparams.eval_mode == "slide" else self.model
        logits = run(x).float()
        if not self.hparams.tta_hflip:
            return logits
        flipped = run(x.flip(-1)).float().flip(-1)
        probs = (logits.softmax(1) + flipped.softmax(1)) / 2
        return probs.clamp_min(1e-12).log()

    # -- steps --------------------------------------------------------------------------------------------

    def _train_outputs(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if hasattr(self.model, "forward_with_aux"):
            return self.model.forward_with_aux(x)
        return self.model(x), None

    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Decode loss + ``aux_weight`` x auxiliary loss of a training batch, and the parts."""
        logits, aux = self._train_outputs(batch["image"])
        hp = self.hparams
        return segmentation_loss(
            logits, batch["mask"], aux, hp.aux_weight, hp.ignore_index, hp.avg_non_ignore
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, parts = self.training_loss(batch)
        n = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for name, value in parts.items():
            self.log(f"train/loss_{name}", value, batch_size=n)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        return loss

    def _display(self, images: Tensor) -> Tensor:
        """Normalised images -> ``(B, H, W, 3)`` uint8 for plots (undoing the data's normalisation)."""
        from rsvit.viz.images import display_image

        restored = self.undo_data_normalisation(images)
        if restored is not None:
            images = restored.clamp(0, 1)
        return torch.stack([torch.from_numpy(display_image(im)) for im in images.float().cpu()])

    def evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        images, masks = batch["image"], batch["mask"]
        scores = self.infer(images)
        hp = self.hparams
        loss, _ = segmentation_loss(scores, masks, None, 0.0, hp.ignore_index, hp.avg_non_ignore)
        preds = scores.argmax(1)
        getattr(self, f"{stage}_confusion").update(preds, masks)
        getattr(self, f"{stage}_loss").update(loss.detach(), weight=images.shape[0])
        if stage == "val" and len(self.examples) < hp.num_plots and not self.trainer.sanity_checking:
            shown = self._display(images)
            for i in range(images.shape[0]):
                if len(self.examples) >= hp.num_plots:
                    break
                h, w = (int(v) for v in batch["size"][i]) if "size" in batch else images.shape[-2:]
                self.examples.append(
                    {
                        "path": batch.get("path", [""] * images.shape[0])[i],
                        "image": shown[i, :h, :w].clone(),
                        "mask": masks[i, :h, :w].cpu().clone(),
                        "prediction": preds[i, :h, :w].cpu().clone(),
                    }
                )

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        images = batch["image"]
        preds = self.infer(images).argmax(1).cpu()
        shown = self._display(images)
        sizes = batch.get("size", torch.tensor([list(images.shape[-2:])] * images.shape[0]))
        out: dict[str, Any] = {
            "path": list(batch.get("path", [""] * images.shape[0])),
            "prediction": [],
            "image": [],
        }
        for i, (h, w) in enumerate(sizes.tolist()):
            out["prediction"].append(
                preds[i, :h, :w].to(torch.uint8 if self.num_classes <= 255 else torch.int32)
            )
            out["image"].append(shown[i, :h, :w])
        return out

    def compute_evaluation(self, stage: str) -> Evaluation:
        confusion = getattr(self, f"{stage}_confusion")
        loss_metric = getattr(self, f"{stage}_loss")
        matrix = confusion.compute()  # synchronised over processes
        loss = float(loss_metric.compute())
        confusion.reset()
        loss_metric.reset()
        if self.trainer.sanity_checking:
            return Evaluation([], {})
        result = confusion_metrics(matrix, self.class_names)
        logged = [(name, result[name]) for name in ("mIoU", "mF1", "OA")] + [("loss", loss)]
        return Evaluation(logged, json_safe({"loss": loss, **result, "confusion": matrix.long().tolist()}))

    # -- optimisation -------------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = self.make_optimizer(weight_decay_groups(self.model, hp.no_decay_keywords or ()))
        total = int(self.trainer.estimated_stepping_batches)
        if total <= 0 or total == math.inf:
            raise ValueError("the poly schedule needs a finite number of steps: set max_steps or max_epochs")

        def factor_for(base_lr: float) -> Callable[[int], float]:
            min_ratio = hp.min_lr / base_lr if base_lr > 0 else 0.0
            return lambda step: poly_lr_factor(
                step, total, hp.poly_power, min_ratio, hp.warmup_iters, hp.warmup_ratio
            )

        lambdas = [factor_for(group["lr"]) for group in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- export ----------------------------------------------------------------------------------------

    def export_extra(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        """Palette, ignore index and evaluation settings (``predict-raster`` takes its window from them)."""
        hp = self.hparams
        palette = self.palette
        if palette is None:
            from rsvit.viz.palettes import default_palette

            palette = [list(c) for c in default_palette(self.num_classes)]
        return {
            "palette": palette,
            "ignore_index": int(hp.ignore_index),
            "eval_mode": str(hp.eval_mode),
            "slide_crop": hp.slide_crop,
            "slide_stride": hp.slide_stride,
            # predict-raster's default window: the evaluation window of a sliding-window model
            **({"window": hp.slide_crop} if hp.eval_mode == "slide" else {}),
        }

    @classmethod
    def command_line(cls) -> CommandLine:
        from rsvit.datamodules.segmentation import SegmentationDataModule
        from rsvit.tasks.segmentation_predict import SegmentationPredictionWriter

        return CommandLine(
            datamodule=SegmentationDataModule,
            links=(
                Link("num_classes", "num_classes", on_instantiate=True),
                Link("classes", "class_names", on_instantiate=True),
                Link("palette", "palette", on_instantiate=True),
                Link("ignore_index", "ignore_index"),
                Link("in_chans", "in_chans"),
            ),
            callbacks={"report": SegmentationReport, "prediction_writer": SegmentationPredictionWriter},
        )


class SegmentationReport(RunReport):
    """Writes ``metrics.json``, validation prediction PNGs and (end of fit) ``model.safetensors``.

    Reads what :class:`SegmentationTask` keeps in ``evaluation`` and
    ``examples`` (see :class:`~rsvit.tasks.reports.RunReport`).

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
        super().__init__(filename, monitor, export, plots)

    def draw_examples(self, folder: Path, pl_module: L.LightningModule) -> None:
        for i, example in enumerate(getattr(pl_module, "examples", [])):
            save_prediction_png(
                folder / f"{i:02d}_{safe_stem(example['path'], i)}.png",
                example["image"],
                example["prediction"],
                pl_module.class_names,
                getattr(pl_module, "palette", None),
                mask=example["mask"],
                title=Path(example["path"]).name,
            )
