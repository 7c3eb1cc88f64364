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
reads; :class:`rsvit.tasks.seg_plots.SegmentationReport` calls it at the end of fit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from rsvit.models.factory import ModelSpec, build_model, save_model, task_spec
from rsvit.models.sliding_window import sliding_window_inference

__all__ = [
    "SegmentationTask",
    "confusion_metrics",
    "decay_parameter_groups",
    "poly_lr_factor",
    "segmentation_loss",
]

OFFICIAL_NO_DECAY = ("absolute_pos_embed", "relative_position_bias_table", "norm")


def _default_optimizer(params: Iterable[Any]) -> torch.optim.Optimizer:
    """The official Swin/ViTAEv2 optimiser."""
    return torch.optim.AdamW(params, lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)


def decay_parameter_groups(model: nn.Module, no_decay_keywords: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Parameters whose name contains a keyword get no weight decay (mmcv ``custom_keys``, decay_mult 0)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if any(k in name for k in no_decay_keywords) else decay).append(param)
    groups: list[dict[str, Any]] = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def poly_lr_factor(
    step: int,
    max_steps: int,
    power: float = 1.0,
    min_ratio: float = 0.0,
    warmup_steps: int = 0,
    warmup_ratio: float = 1e-6,
) -> float:
    """Factor on the base lr at optimiser step ``step`` (0-based): poly decay with linear warm-up.

    ``min_ratio`` is ``min_lr / base_lr``. During warm-up the poly value is scaled by
    ``1 - (1 - step / warmup_steps) * (1 - warmup_ratio)``.
    """
    progress = min(step, max_steps) / max(max_steps, 1)
    factor = (1.0 - min_ratio) * (1.0 - progress) ** power + min_ratio
    if warmup_steps > 0 and step < warmup_steps:
        factor *= 1.0 - (1.0 - step / warmup_steps) * (1.0 - warmup_ratio)
    return factor


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


def _nanmean(values: Tensor) -> float:
    valid = values[~torch.isnan(values)]
    return float(valid.mean()) if valid.numel() else float("nan")


def confusion_metrics(confusion: Tensor, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """IoU, F1, precision, recall per class and their means, plus overall accuracy.

    ``confusion[i, j]`` counts pixels of true class ``i`` predicted as ``j``. Per-class values are NaN
    when undefined (class absent from labels and predictions); means skip NaN.
    """
    cm = confusion.double()
    tp = cm.diag()
    pred = cm.sum(0)
    true = cm.sum(1)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(true + pred - tp > 0, tp / (true + pred - tp), nan)
    precision = torch.where(pred > 0, tp / pred, torch.where(true > 0, 0.0, nan))
    recall = torch.where(true > 0, tp / true, nan)
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall), torch.where(true > 0, 0.0, nan)
    )
    total = cm.sum()
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]
    per_class = {
        name: {
            "IoU": float(iou[i]),
            "F1": float(f1[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
        }
        for i, name in enumerate(names)
    }
    return {
        "mIoU": _nanmean(iou),
        "mF1": _nanmean(f1),
        "mPrecision": _nanmean(precision),
        "mRecall": _nanmean(recall),
        "OA": float(tp.sum() / total) if total > 0 else float("nan"),
        "per_class": per_class,
    }


def _json_safe(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


class SegmentationTask(L.LightningModule):
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
        optimizer: OptimizerCallable = _default_optimizer,
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
        self.spec: ModelSpec | None
        if isinstance(model, nn.Module):
            self.spec = getattr(model, "spec", None)
            self.model = model
            n_classes = num_classes or getattr(model, "num_classes", None)
            if not isinstance(n_classes, int):
                raise ValueError("give num_classes for a model without a 'num_classes' attribute")
        else:
            spec = task_spec(
                model,
                "segmentation",
                "resnet50",
                "SegmentationTask",
                num_classes=num_classes,
                in_chans=in_chans,
            )
            self.spec = spec
            self.model = build_model(spec)
            n_classes = spec.num_classes
        if class_names is not None and len(class_names) != n_classes:
            raise ValueError(f"{len(class_names)} class names for {n_classes} classes")
        if palette is not None and len(palette) != n_classes:
            raise ValueError(f"palette has {len(palette)} colours for {n_classes} classes")
        self.save_hyperparameters(ignore=["optimizer", "model"])
        if self.spec is not None:
            self.hparams["model"] = self.spec.to_dict()
        self.num_classes = int(n_classes)
        self.optimizer_factory = optimizer
        self.class_names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        self.palette = [list(map(int, c)) for c in palette] if palette else None
        if weights or backbone_weights:
            from rsvit.weights import load_starting_weights

            load_starting_weights(self.model, weights, backbone_weights)
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
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        transform = getattr(datamodule, "eval_transform", None)
        from rsvit.data.segmentation import display_image

        if transform is not None and hasattr(transform, "denormalize"):
            images = transform.denormalize(images.float().cpu()).clamp(0, 1)
        return torch.stack([torch.from_numpy(display_image(im)) for im in images.float().cpu()])

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
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

    def on_validation_epoch_start(self) -> None:
        self.examples = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

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

    def _eval_epoch_end(self, stage: str) -> None:
        confusion = getattr(self, f"{stage}_confusion")
        loss_metric = getattr(self, f"{stage}_loss")
        matrix = confusion.compute()  # synchronised over processes
        loss = float(loss_metric.compute())
        confusion.reset()
        loss_metric.reset()
        if self.trainer.sanity_checking:
            return
        result = confusion_metrics(matrix, self.class_names)
        for name in ("mIoU", "mF1", "OA"):
            self.log(f"{stage}/{name}", result[name], prog_bar=name == "mIoU", sync_dist=False)
        self.log(f"{stage}/loss", loss, sync_dist=False)
        self.evaluation[stage] = _json_safe(
            {
                "epoch": int(self.current_epoch),
                "step": int(self.global_step),
                "loss": loss,
                **result,
                "confusion": matrix.long().tolist(),
            }
        )

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # -- optimisation -------------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = self.optimizer_factory(decay_parameter_groups(self.model, hp.no_decay_keywords or ()))
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

    def export_model(self, path: str | os.PathLike[str], preprocessing: dict[str, Any] | None = None) -> Path:
        """Writes the network with its spec, classes, normalisation, palette and evaluation settings.

        ``preprocessing`` (``input_size``, ``mean``, ``std``, ``bands``) defaults to the datamodule's.
        """
        from rsvit.weights import WeightsMetadata

        if self.spec is None:
            raise ValueError(
                "cannot export a model given as nn.Module without a ModelSpec ('spec' attribute)"
            )
        if preprocessing is None:
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            preprocessing = datamodule.preprocessing() if hasattr(datamodule, "preprocessing") else {}
        hp = self.hparams
        bands = preprocessing.get("bands")
        palette = self.palette
        if palette is None:
            from rsvit.data.segmentation import default_palette

            palette = [list(c) for c in default_palette(self.num_classes)]
        metadata = WeightsMetadata(
            input_size=preprocessing.get("input_size"),
            mean=preprocessing.get("mean"),
            std=preprocessing.get("std"),
            band_names=tuple(f"band_{b}" for b in bands) if bands else None,
            classes=tuple(self.class_names),
            extra={
                "palette": palette,
                "ignore_index": int(hp.ignore_index),
                "eval_mode": str(hp.eval_mode),
                "slide_crop": hp.slide_crop,
                "slide_stride": hp.slide_stride,
                # predict-raster's default window: the evaluation window of a sliding-window model
                **({"window": hp.slide_crop} if hp.eval_mode == "slide" else {}),
                "global_step": int(self.global_step) if self._trainer is not None else 0,
            },
        )
        path = Path(path)
        save_model(path, self.model, self.spec, metadata)
        return path
