"""``DenseRegressionTask``: DPT height / depth regression in Lightning, and its report callback.

What the task adds to the network built from a :class:`~rsvit.models.ModelSpec` (``task="regression"``):

* loss on valid pixels only (``batch["valid"]``): ``"ssi"`` is the MiDaS objective, trimmed
  scale-and-shift invariant loss plus ``alpha`` x multi-scale gradient matching, for relative heights;
  ``"l1"`` and ``"berhu"`` regress metric heights (metres);
* optimiser (AdamW, lr 1e-4 by default) with two parameter groups, ``encoder`` (the backbone, at
  ``encoder_lr_factor`` x the optimiser's lr) and ``decoder`` (the DPT head, at the optimiser's lr): the DPT
  paper trained Adam with 1e-5 for the backbone and 1e-4 for the decoder, hence the default factor 0.1
  (use 1.0 when the backbone starts from scratch);
* a learning-rate schedule stepped after every optimiser step: linear warmup over ``warmup`` (a fraction
  of the run's optimiser steps when < 1, else a step count), then ``"cosine"`` or ``"poly"`` decay to
  ``min_lr_ratio`` x the peak, or ``"constant"``. The paper states no schedule for depth (only poly for its
  segmentation runs); warmup + cosine is the default here. A ``scheduler`` factory from config replaces it;
* a head that can go negative when the network is built from a spec: the official depth models end in a
  ReLU (``non_negative``, kept for them), but a fresh head whose output starts below zero gets no gradient
  through it and the L1 / BerHu losses stall. Specs that do not set ``head_kwargs.head_kwargs.non_negative``
  get ``False`` written into them (so an exported model rebuilds the same network);
* two evaluation protocols with :class:`~rsvit.metrics.regression.DepthMetrics`: *relative* (each image's
  prediction least-squares aligned in scale and shift to its target), logged as ``val/abs_rel``,
  ``val/rmse``, ...; and *metric* (unaligned), logged as ``val/metric_abs_rel``, ``val/metric_rmse``, ...
  A model trained with ``"ssi"`` has no meaningful metric numbers; both are always logged so runs compare.

:class:`HeightReport` writes ``metrics.json``, colour-mapped previews (image | target | prediction, with
a colour bar in metres and a scale bar when the pixel size is known) and, at the end of fit,
``model.safetensors`` (:meth:`DenseRegressionTask.export_model`), loadable with
:func:`rsvit.models.load_model`.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric

from rsvit.metrics.regression import (
    DEPTH_METRIC_NAMES,
    DepthMetrics,
    apply_scale_shift,
    least_squares_scale_shift,
)
from rsvit.models.dpt.losses import BerHuLoss, MaskedL1Loss, ScaleShiftInvariantLoss
from rsvit.models.spec import ModelSpec
from rsvit.tasks.base import BaseTask, CommandLine, Evaluation, Link, json_safe
from rsvit.tasks.optim import ScheduleName, WarmupDecay, encoder_decoder_groups
from rsvit.tasks.reports import RunReport
from rsvit.tasks.writers import safe_stem
from rsvit.utils.atomic import save_figure

__all__ = [
    "DenseRegressionTask",
    "HeightReport",
    "WarmupDecay",
    "build_regression_loss",
    "save_height_preview",
]

LossName = Literal["ssi", "l1", "berhu"]
LOWER_IS_BETTER = ("abs_rel", "rmse", "mae", "log10")


def build_regression_loss(name: LossName, **kwargs: Any) -> nn.Module:
    """The loss module for ``"ssi"``, ``"l1"`` or ``"berhu"``; ``kwargs`` go to its constructor."""
    if name == "ssi":
        return ScaleShiftInvariantLoss(**kwargs)
    if name == "l1":
        return MaskedL1Loss(**kwargs)
    if name == "berhu":
        return BerHuLoss(**kwargs)
    raise ValueError(f"loss must be 'ssi', 'l1' or 'berhu', got {name!r}")


def __getattr__(name: str) -> Any:
    if name == "parameter_groups":
        warnings.warn(
            "rsvit.tasks.regression.parameter_groups moved to rsvit.tasks.optim.encoder_decoder_groups",
            DeprecationWarning,
            stacklevel=2,
        )
        return encoder_decoder_groups
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _trainable_from_scratch(spec: ModelSpec) -> ModelSpec:
    """The spec with the depth head's final ReLU off unless the spec decides (see the module docstring)."""
    head_kwargs = dict(spec.head_kwargs)
    inner = dict(head_kwargs.get("head_kwargs") or {})
    if "non_negative" in inner:
        return spec
    head_kwargs["head_kwargs"] = {**inner, "non_negative": False}
    return ModelSpec.from_dict({**spec.to_dict(), "head_kwargs": head_kwargs})


class DenseRegressionTask(BaseTask):
    """Per-pixel height / depth regression (see the module docstring).

    Args:
        model: a regression :class:`~rsvit.models.ModelSpec` (or its dict; ``task`` may be left out) or a
            ready ``nn.Module`` mapping ``(B, C, H, W)`` images to ``(B, H, W)`` heights.
        in_chans: overrides the spec's (linked from the data by the command line).
        loss: ``"ssi"``, ``"l1"`` or ``"berhu"``; loss_kwargs: its options (e.g. ``alpha``, ``trim``).
        optimizer: factory from config; it receives the ``encoder`` / ``decoder`` parameter groups.
        encoder_lr_factor: the encoder group's lr relative to the optimiser's (DPT paper: 0.1).
        schedule, warmup, min_lr_ratio, poly_power: the default per-step schedule (module docstring).
        scheduler: a factory from config replacing that schedule (stepped per epoch unless it says otherwise).
        min_value: targets at or below it are left out of the ratio metrics (AbsRel, log10, delta).
        pixel_size: ground size of a pixel in metres (linked from the data) for the preview scale bar.
        num_plots: validation images kept for the previews.
    """

    family = "regression"
    default_backbone = "resnet18"
    default_optimizer = ("AdamW", {"lr": 1e-4, "weight_decay": 0.01})
    progress_metric = "abs_rel"

    def __init__(
        self,
        model: ModelSpec | dict[str, Any] | nn.Module | None = None,
        in_chans: int | None = None,
        loss: LossName = "ssi",
        loss_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable | None = None,
        encoder_lr_factor: float = 0.1,
        schedule: ScheduleName = "cosine",
        warmup: float = 0.05,
        min_lr_ratio: float = 0.01,
        poly_power: float = 0.9,
        scheduler: LRSchedulerCallable | None = None,
        min_value: float = 1e-3,
        pixel_size: float | None = None,
        num_plots: int = 4,
    ) -> None:
        super().__init__()
        self.model = self.network_from(model, in_chans=None if in_chans is None else int(in_chans))
        if encoder_lr_factor <= 0:
            raise ValueError(f"encoder_lr_factor must be positive, got {encoder_lr_factor}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0 (a fraction of the steps or a step count), got {warmup}")
        WarmupDecay(1, 0, schedule, min_lr_ratio, poly_power)  # checks the schedule arguments early
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "model"])
        self.record_spec()
        self.criterion = build_regression_loss(loss, **(loss_kwargs or {}))
        self.relative = loss == "ssi"
        self.set_optimizer(optimizer)
        self.scheduler_factory = scheduler
        self.pixel_size = pixel_size
        for stage in ("val", "test"):
            setattr(self, f"{stage}_relative", DepthMetrics(align=True, min_value=min_value))
            setattr(self, f"{stage}_metric", DepthMetrics(align=False, min_value=min_value))
            setattr(self, f"{stage}_loss", MeanMetric())
        self.evaluation: dict[str, dict[str, Any]] = {}
        self.examples: list[dict[str, Any]] = []

    def forward(self, x: Tensor) -> Tensor:
        """Heights ``(B, H, W)``."""
        return self.model(x)

    def compute_loss(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """``(loss, prediction)`` of a batch; only ``batch["valid"]`` pixels enter the loss."""
        pred = self.model(batch["image"]).float()
        return self.criterion(pred, batch["target"].float(), batch["valid"]), pred

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, _ = self.compute_loss(batch)
        n = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        groups = self.trainer.optimizers[0].param_groups
        self.log("train/lr", groups[-1]["lr"], batch_size=n)
        if len(groups) > 1:
            self.log("train/lr_encoder", groups[0]["lr"], batch_size=n)
        return loss

    def _display(self, images: Tensor) -> Tensor:
        """``(B, H, W, 3)`` floats in [0, 1]: bands 1-3 (or band 1 as grey), 2-98 % stretched per image."""
        restored = self.undo_data_normalisation(images)
        images = restored if restored is not None else images.float().cpu()
        rgb = images[:, :3] if images.shape[1] >= 3 else images[:, :1].expand(-1, 3, -1, -1)
        flat = rgb.flatten(1)
        lo = flat.quantile(0.02, dim=1)[:, None, None, None]
        hi = flat.quantile(0.98, dim=1)[:, None, None, None]
        return ((rgb - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1).permute(0, 2, 3, 1)

    def evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        loss, pred = self.compute_loss(batch)
        target, valid = batch["target"].float(), batch["valid"]
        getattr(self, f"{stage}_relative").update(pred, target, valid)
        getattr(self, f"{stage}_metric").update(pred, target, valid)
        getattr(self, f"{stage}_loss").update(loss.detach(), weight=pred.shape[0])
        hp = self.hparams
        if stage != "val" or len(self.examples) >= hp.num_plots or self.trainer.sanity_checking:
            return
        shown = pred
        if self.relative:  # show the prediction in the target's units
            scale, shift = least_squares_scale_shift(pred, target, valid)
            shown = apply_scale_shift(pred, scale, shift)
        images = self._display(batch["image"])
        sizes = batch.get("size", torch.tensor([list(pred.shape[-2:])] * pred.shape[0]))
        for i, (h, w) in enumerate(sizes.tolist()):
            if len(self.examples) >= hp.num_plots:
                break
            self.examples.append(
                {
                    "path": batch.get("path", [""] * pred.shape[0])[i],
                    "image": images[i, :h, :w].clone(),
                    "target": target[i, :h, :w].detach().cpu().clone(),
                    "valid": valid[i, :h, :w].cpu().clone(),
                    "prediction": shown[i, :h, :w].detach().float().cpu().clone(),
                }
            )

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, list[Any]]:
        """Per image, cropped to its own size.

        ``prediction`` (heights), ``valid`` (where the image had data),
        ``image`` (display RGB in [0, 1]) and the source ``path``.
        """
        pred = self.model(batch["image"]).float().cpu()
        n = pred.shape[0]
        sizes = batch.get("size", torch.tensor([list(pred.shape[-2:])] * n)).tolist()
        valid = batch.get("valid")
        valid = valid.cpu() if valid is not None else torch.ones(pred.shape, dtype=torch.bool)
        images = self._display(batch["image"])
        paths = list(batch.get("path", [""] * n))
        return {
            "path": paths,
            "prediction": [pred[i, :h, :w] for i, (h, w) in enumerate(sizes)],
            "valid": [valid[i, :h, :w] for i, (h, w) in enumerate(sizes)],
            "image": [images[i, :h, :w] for i, (h, w) in enumerate(sizes)],
        }

    def compute_evaluation(self, stage: str) -> Evaluation:
        rel_metric, met_metric = getattr(self, f"{stage}_relative"), getattr(self, f"{stage}_metric")
        loss_metric = getattr(self, f"{stage}_loss")
        rel = {k: float(v) for k, v in rel_metric.compute().items()}
        met = {k: float(v) for k, v in met_metric.compute().items()}
        loss = float(loss_metric.compute())
        for m in (rel_metric, met_metric, loss_metric):
            m.reset()
        logged = [
            (f"{p}{name}", v[name]) for name in DEPTH_METRIC_NAMES for p, v in (("", rel), ("metric_", met))
        ]
        entry = json_safe({"loss": loss, "relative": rel, "metric": met})
        return Evaluation([*logged, ("loss", loss)], entry)

    def configure_optimizers(self) -> Any:
        """Optimiser on the encoder / decoder groups and the schedule (see the module docstring)."""
        optimizer = self.make_optimizer(encoder_decoder_groups(self.model))
        hp = self.hparams
        for group in optimizer.param_groups:
            if group.get("name") == "encoder":
                group["lr"] = group["lr"] * float(hp.encoder_lr_factor)
        if self.scheduler_factory is not None:
            return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
        if hp.schedule == "constant" and not hp.warmup:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                "the learning-rate schedule needs a finite run: set trainer.max_steps or trainer.max_epochs "
                "(or model.schedule=constant with model.warmup=0)"
            )
        total = max(int(total), 1)
        warmup_steps = round(hp.warmup * total) if hp.warmup < 1 else int(hp.warmup)
        decay = WarmupDecay(total, min(warmup_steps, total), hp.schedule, hp.min_lr_ratio, hp.poly_power)
        scheduler = LambdaLR(optimizer, decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def adapt_spec(self, spec: ModelSpec) -> ModelSpec:
        return _trainable_from_scratch(spec)

    def export_classes(self) -> None:
        return None

    def export_extra(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        """What the values mean (relative or metres), the loss and the pixel size."""
        return {
            "output": "relative height" if self.relative else "height (m)",
            "loss": str(self.hparams.loss),
            "pixel_size": self.pixel_size,
        }

    @classmethod
    def command_line(cls) -> CommandLine:
        from rsvit.datamodules.regression import HeightDataModule
        from rsvit.tasks.regression_predict import HeightPredictionWriter

        return CommandLine(
            datamodule=HeightDataModule,
            links=(Link("in_chans", "in_chans"), Link("pixel_size", "pixel_size", on_instantiate=True)),
            callbacks={"report": HeightReport, "prediction_writer": HeightPredictionWriter},
        )


def _nice_length(limit: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``limit`` (scale bar lengths)."""
    exp = math.floor(math.log10(limit))
    for m in (5, 2, 1):
        if m * 10**exp <= limit:
            return float(m * 10**exp)
    return float(10**exp)


def save_height_preview(
    path: str | os.PathLike[str],
    image: np.ndarray | Tensor,
    target: np.ndarray | Tensor | None,
    prediction: np.ndarray | Tensor,
    valid: np.ndarray | Tensor | None = None,
    pixel_size: float | None = None,
    title: str = "",
    unit: str = "m",
) -> Path:
    """PNG of image | target | prediction; heights share one colour scale and bar, nodata is grey.

    ``image`` is ``(H, W, 3)`` in [0, 1]; with ``pixel_size`` (metres per pixel) a scale bar is drawn.
    Without ``target`` (plain prediction) the figure is image | prediction, ``valid`` then masking the
    prediction (image nodata) and the colour scale coming from the prediction.
    """
    import matplotlib
    import matplotlib.pyplot as plt
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    img = np.asarray(torch.as_tensor(image).cpu(), dtype=np.float32)
    pred = np.asarray(torch.as_tensor(prediction).detach().cpu(), dtype=np.float32)
    ok = np.ones(pred.shape, dtype=bool) if valid is None else np.asarray(torch.as_tensor(valid).cpu(), bool)
    tgt = None if target is None else np.asarray(torch.as_tensor(target).cpu(), dtype=np.float32)
    reference = tgt if tgt is not None else pred
    ok_values = ok & np.isfinite(reference)
    shown = reference[ok_values] if ok_values.any() else np.zeros(1, np.float32)
    vmin, vmax = (float(v) for v in np.percentile(shown, [1, 99]))
    vmax = vmax if vmax > vmin else vmin + 1.0
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.6")
    panels = 3 if tgt is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4.2), constrained_layout=True)
    try:
        axes[0].imshow(img)
        axes[0].set_title("image")
        if tgt is not None:
            axes[1].imshow(np.ma.masked_where(~ok, tgt), cmap=cmap, vmin=vmin, vmax=vmax)
            axes[1].set_title("target (grey: nodata)")
            mappable = axes[2].imshow(pred, cmap=cmap, vmin=vmin, vmax=vmax)
            axes[2].set_title("prediction")
        else:
            masked = np.ma.masked_where(~ok_values, pred)
            mappable = axes[1].imshow(masked, cmap=cmap, vmin=vmin, vmax=vmax)
            axes[1].set_title("prediction (grey: nodata)")
        for ax in axes:
            ax.set_axis_off()
        fig.colorbar(mappable, ax=list(axes), shrink=0.85, label=f"height ({unit})")
        if pixel_size:
            width_m = img.shape[1] * pixel_size
            length = _nice_length(width_m / 4)
            label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
            for ax in axes:
                bar = AnchoredSizeBar(
                    ax.transData, length / pixel_size, label, "lower left", pad=0.4, color="white",
                    frameon=False, size_vertical=max(img.shape[0] / 100, 1),
                )  # fmt: skip
                ax.add_artist(bar)
        if title:
            fig.suptitle(title)
        return save_figure(fig, path, format="png", dpi=90)
    finally:
        plt.close(fig)


class HeightReport(RunReport):
    """Writes ``metrics.json``, validation previews and (end of fit) ``model.safetensors``.

    Reads what :class:`DenseRegressionTask` keeps in ``evaluation`` and ``examples`` (see
    :class:`~rsvit.tasks.reports.RunReport`).

    Args:
        filename: report name inside the run folder.
        monitor: ``"relative/<name>"`` or ``"metric/<name>"`` deciding the best evaluation (errors such as
            ``abs_rel`` count lower as better, the delta accuracies higher).
        export: file name of the exported model ('' to skip).
        plots: write the preview PNGs (``val_predictions/``).
    """

    def __init__(
        self,
        filename: str = "metrics.json",
        monitor: str = "relative/abs_rel",
        export: str = "model.safetensors",
        plots: bool = True,
    ) -> None:
        protocol, _, name = monitor.partition("/")
        if protocol not in ("relative", "metric") or name not in DEPTH_METRIC_NAMES:
            raise ValueError(f"monitor must be 'relative/<metric>' or 'metric/<metric>', got {monitor!r}")
        super().__init__(filename, monitor, export, plots)
        self.previews: list[Path] = []

    def score(self, entry: dict[str, Any]) -> float | None:
        protocol, _, name = self.monitor.partition("/")
        value = (entry.get(protocol) or {}).get(name)
        if value is None:
            return None
        return -value if name in LOWER_IS_BETTER else value

    def header(self, pl_module: L.LightningModule) -> dict[str, Any]:
        return {"monitor": self.monitor}

    def draw_examples(self, folder: Path, pl_module: L.LightningModule) -> None:
        aligned = " (prediction aligned to target)" if getattr(pl_module, "relative", False) else ""
        for i, ex in enumerate(getattr(pl_module, "examples", [])):
            self.previews.append(
                save_height_preview(
                    folder / f"{i:02d}_{safe_stem(ex['path'], i)}.png",
                    ex["image"],
                    ex["target"],
                    ex["prediction"],
                    ex["valid"],
                    pixel_size=getattr(pl_module, "pixel_size", None),
                    title=Path(ex["path"]).name + aligned,
                )
            )
