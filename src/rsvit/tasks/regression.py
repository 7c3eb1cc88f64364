"""``DenseRegressionTask``: DPT height / depth regression in Lightning, and its report callback.

What the task adds to the network built from a :class:`~rsvit.models.ModelSpec` (``task="regression"``):

* loss on valid pixels only (``batch["valid"]``): ``"ssi"`` is the MiDaS objective, trimmed
  scale-and-shift invariant loss plus ``alpha`` x multi-scale gradient matching, for relative heights;
  ``"l1"`` and ``"berhu"`` regress metric heights (metres);
* optimiser (AdamW by default) and optional scheduler from config;
* two evaluation protocols with :class:`~rsvit.metrics.depth.DepthMetrics`: *relative* (each image's
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
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from rsvit.atomic import save_figure
from rsvit.metrics.depth import DEPTH_METRIC_NAMES, DepthMetrics, apply_scale_shift, least_squares_scale_shift
from rsvit.models.dpt.losses import BerHuLoss, MaskedL1Loss, ScaleShiftInvariantLoss
from rsvit.models.factory import ModelSpec, build_model, save_model
from rsvit.tasks.callbacks import run_dir, write_json

__all__ = ["DenseRegressionTask", "HeightReport", "build_regression_loss", "save_height_preview"]

LossName = Literal["ssi", "l1", "berhu"]
LOWER_IS_BETTER = ("abs_rel", "rmse", "mae", "log10")


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)


def build_regression_loss(name: LossName, **kwargs: Any) -> nn.Module:
    """The loss module for ``"ssi"``, ``"l1"`` or ``"berhu"``; ``kwargs`` go to its constructor."""
    if name == "ssi":
        return ScaleShiftInvariantLoss(**kwargs)
    if name == "l1":
        return MaskedL1Loss(**kwargs)
    if name == "berhu":
        return BerHuLoss(**kwargs)
    raise ValueError(f"loss must be 'ssi', 'l1' or 'berhu', got {name!r}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


class DenseRegressionTask(L.LightningModule):
    """Per-pixel height / depth regression (see the module docstring).

    Args:
        model: a regression :class:`~rsvit.models.ModelSpec` (or its dict; ``task`` may be left out) or a
            ready ``nn.Module`` mapping ``(B, C, H, W)`` images to ``(B, H, W)`` heights.
        in_chans: overrides the spec's (linked from the data by the command line).
        loss: ``"ssi"``, ``"l1"`` or ``"berhu"``; loss_kwargs: its options (e.g. ``alpha``, ``trim``).
        optimizer, scheduler: factories from config (scheduler stepped per epoch unless it says otherwise).
        min_value: targets at or below it are left out of the ratio metrics (AbsRel, log10, delta).
        pixel_size: ground size of a pixel in metres (linked from the data) for the preview scale bar.
        num_plots: validation images kept for the previews.
    """

    def __init__(
        self,
        model: ModelSpec | dict[str, Any] | nn.Module | None = None,
        in_chans: int | None = None,
        loss: LossName = "ssi",
        loss_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable = _default_optimizer,
        scheduler: LRSchedulerCallable | None = None,
        min_value: float = 1e-3,
        pixel_size: float | None = None,
        num_plots: int = 4,
    ) -> None:
        super().__init__()
        self.spec: ModelSpec | None
        if isinstance(model, nn.Module):
            self.spec = getattr(model, "spec", None)
            self.model = model
        else:
            spec = (
                model
                if isinstance(model, ModelSpec)
                else ModelSpec.from_dict({"task": "regression", "backbone": "resnet18", **(model or {})})
            )
            if spec.task != "regression":
                raise ValueError(f"DenseRegressionTask needs a regression model spec, got task {spec.task!r}")
            if in_chans is not None:
                spec = ModelSpec.from_dict({**spec.to_dict(), "in_chans": int(in_chans)})
            self.spec = spec
            self.model = build_model(spec)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "model"])
        if self.spec is not None:
            self.hparams["model"] = self.spec.to_dict()
        self.criterion = build_regression_loss(loss, **(loss_kwargs or {}))
        self.relative = loss == "ssi"
        self.optimizer_factory = optimizer
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
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        return loss

    def _display(self, images: Tensor) -> Tensor:
        """``(B, H, W, 3)`` floats in [0, 1]: bands 1-3 (or band 1 as grey), 2-98 % stretched per image."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        transform = getattr(datamodule, "eval_transform", None)
        images = images.float().cpu()
        if transform is not None and hasattr(transform, "denormalize"):
            images = transform.denormalize(images)
        rgb = images[:, :3] if images.shape[1] >= 3 else images[:, :1].expand(-1, 3, -1, -1)
        flat = rgb.flatten(1)
        lo = flat.quantile(0.02, dim=1)[:, None, None, None]
        hi = flat.quantile(0.98, dim=1)[:, None, None, None]
        return ((rgb - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1).permute(0, 2, 3, 1)

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
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

    def on_validation_epoch_start(self) -> None:
        self.examples = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[Tensor]:
        """Heights of each image cropped to its own size."""
        pred = self.model(batch["image"]).float().cpu()
        sizes = batch.get("size", torch.tensor([list(pred.shape[-2:])] * pred.shape[0]))
        return [pred[i, :h, :w] for i, (h, w) in enumerate(sizes.tolist())]

    def _eval_epoch_end(self, stage: str) -> None:
        rel_metric, met_metric = getattr(self, f"{stage}_relative"), getattr(self, f"{stage}_metric")
        loss_metric = getattr(self, f"{stage}_loss")
        rel = {k: float(v) for k, v in rel_metric.compute().items()}
        met = {k: float(v) for k, v in met_metric.compute().items()}
        loss = float(loss_metric.compute())
        for m in (rel_metric, met_metric, loss_metric):
            m.reset()
        if self.trainer.sanity_checking:
            return
        for name in DEPTH_METRIC_NAMES:
            self.log(f"{stage}/{name}", rel[name], prog_bar=name == "abs_rel")
            self.log(f"{stage}/metric_{name}", met[name])
        self.log(f"{stage}/loss", loss)
        self.evaluation[stage] = _json_safe(
            {
                "epoch": int(self.current_epoch),
                "step": int(self.global_step),
                "loss": loss,
                "relative": rel,
                "metric": met,
            }
        )

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    def export_model(self, path: str | os.PathLike[str], preprocessing: dict[str, Any] | None = None) -> Path:
        """Writes the network with its spec, normalisation, loss and pixel size (``preprocessing`` defaults to
        the datamodule's)."""
        from rsvit.weights import WeightsMetadata

        if self.spec is None:
            raise ValueError(
                "cannot export a model given as nn.Module without a ModelSpec ('spec' attribute)"
            )
        if preprocessing is None:
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            preprocessing = datamodule.preprocessing() if hasattr(datamodule, "preprocessing") else {}
        bands = preprocessing.get("bands")
        metadata = WeightsMetadata(
            input_size=preprocessing.get("input_size"),
            mean=preprocessing.get("mean"),
            std=preprocessing.get("std"),
            band_names=tuple(f"band_{b}" for b in bands) if bands else None,
            extra={
                "output": "relative height" if self.relative else "height (m)",
                "loss": str(self.hparams.loss),
                "pixel_size": self.pixel_size,
                "global_step": int(self.global_step) if self._trainer is not None else 0,
            },
        )
        path = Path(path)
        save_model(path, self.model, self.spec, metadata)
        return path


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
    target: np.ndarray | Tensor,
    prediction: np.ndarray | Tensor,
    valid: np.ndarray | Tensor | None = None,
    pixel_size: float | None = None,
    title: str = "",
    unit: str = "m",
) -> Path:
    """PNG of image | target | prediction; heights share one colour scale and bar, nodata is grey.

    ``image`` is ``(H, W, 3)`` in [0, 1]; with ``pixel_size`` (metres per pixel) a scale bar is drawn.
    """
    import matplotlib
    import matplotlib.pyplot as plt
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    img = np.asarray(torch.as_tensor(image).cpu(), dtype=np.float32)
    tgt = np.asarray(torch.as_tensor(target).cpu(), dtype=np.float32)
    pred = np.asarray(torch.as_tensor(prediction).detach().cpu(), dtype=np.float32)
    ok = np.ones_like(tgt, dtype=bool) if valid is None else np.asarray(torch.as_tensor(valid).cpu(), bool)
    shown = tgt[ok] if ok.any() else pred.ravel()
    vmin, vmax = (float(v) for v in np.percentile(shown, [1, 99]))
    vmax = vmax if vmax > vmin else vmin + 1.0
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("0.6")
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), constrained_layout=True)
    try:
        axes[0].imshow(img)
        axes[0].set_title("image")
        axes[1].imshow(np.ma.masked_where(~ok, tgt), cmap=cmap, vmin=vmin, vmax=vmax)
        axes[1].set_title("target (grey: nodata)")
        mappable = axes[2].imshow(pred, cmap=cmap, vmin=vmin, vmax=vmax)
        axes[2].set_title("prediction")
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


def _safe_name(path: str, index: int) -> str:
    stem = Path(path).stem if path else f"image_{index:04d}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


class HeightReport(Callback):
    """Writes ``metrics.json``, validation previews and (end of fit) ``model.safetensors``.

    Reads what :class:`DenseRegressionTask` keeps in ``evaluation`` and ``examples``; only the main
    process writes.

    Args:
        filename: report name inside the run folder.
        monitor: ``"relative/<name>"`` or ``"metric/<name>"`` deciding the best evaluation.
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
        self.filename, self.monitor, self.export, self.plots = filename, monitor, export, plots
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.last: dict[str, Any] = {}
        self.exported: Path | None = None
        self.previews: list[Path] = []

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.best = state_dict.get("best")

    def _score(self, entry: dict[str, Any]) -> float | None:
        protocol, _, name = self.monitor.partition("/")
        value = (entry.get(protocol) or {}).get(name)
        if value is None:
            return None
        return -value if name in LOWER_IS_BETTER else value

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        report = {
            "monitor": self.monitor,
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
        aligned = " (prediction aligned to target)" if getattr(pl_module, "relative", False) else ""
        for i, ex in enumerate(getattr(pl_module, "examples", [])):
            self.previews.append(
                save_height_preview(
                    folder / f"{i:02d}_{_safe_name(ex['path'], i)}.png",
                    ex["image"],
                    ex["target"],
                    ex["prediction"],
                    ex["valid"],
                    pixel_size=getattr(pl_module, "pixel_size", None),
                    title=Path(ex["path"]).name + aligned,
                )
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        result = getattr(pl_module, "evaluation", {}).get("val")
        if result is None:
            return
        self.last["val"] = result
        if trainer.state.fn == "fit":
            self.history = [h for h in self.history if h["step"] != result["step"]] + [result]
            score, best = self._score(result), None if self.best is None else self._score(self.best)
            if score is not None and (best is None or score > best):
                self.best = result
        else:
            self._plots(trainer, pl_module)
        self._write(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._plots(trainer, pl_module)
        if self.export and trainer.is_global_zero and getattr(pl_module, "spec", None) is not None:
            self.exported = pl_module.export_model(run_dir(trainer) / self.export)
        self._write(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        result = getattr(pl_module, "evaluation", {}).get("test")
        if result is not None:
            self.last["test"] = result
            self._write(trainer, pl_module)
