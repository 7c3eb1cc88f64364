"""``DetectionTask``: Oriented R-CNN training and DOTA-style evaluation in Lightning.

* loss: the sum of the detector's official terms (RPN objectness and box, RoI class and box; assignment,
  sampling and weights as in the official configs), each logged as ``train/loss_<term>``;
* optimiser from config, default the official R-50 one (SGD lr 0.005, momentum 0.9, wd 1e-4), weight
  decay off for parameter names containing ``no_decay_keywords`` (official Swin / ViTAEv2); gradient
  clipping (official 35, L2) is the trainer's ``gradient_clip_val``;
* schedule per optimiser step: linear warm-up from ``warmup_ratio`` x lr over ``warmup_iters`` steps
  (mmcv's rule), then x ``gamma`` at every milestone (official 1x: epochs 8 and 11; ``milestone_unit:
  step`` counts steps instead, for runs sized in steps);
* validation / test: detections of every image against its DOTA polygons, mAP at IoU 0.5 both as VOC07
  11-point (``mAP``, DOTA's official number) and as area under the curve (``mAP_area``), with a per-class
  table in ``metrics.json`` (:class:`DetectionReport`), which also draws a few validation images with
  ground truth and detections and exports ``model.safetensors`` at the end of fit.

Evaluation runs on one process (the detections are not gathered across processes).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from rsvit.data.detection.labels import DotaLabels
from rsvit.metrics.detection import evaluate_dota, gather_evaluation
from rsvit.models.spec import ModelSpec
from rsvit.structures.rotated_boxes import obb_to_poly, poly_to_obb
from rsvit.tasks.base import BaseTask, CommandLine, Evaluation, Link, json_safe
from rsvit.tasks.optim import weight_decay_groups
from rsvit.tasks.reports import RunReport, run_dir
from rsvit.tasks.writers import FolderPredictionWriter, safe_stem

__all__ = ["DetectionPredictionWriter", "DetectionReport", "DetectionTask", "warmup_step_factor"]


def warmup_step_factor(
    step: int,
    progress: int,
    milestones: list[int],
    gamma: float = 0.1,
    warmup_iters: int = 500,
    warmup_ratio: float = 1.0 / 3.0,
) -> float:
    """Learning-rate factor at optimiser ``step``: linear warm-up times ``gamma ** (milestones passed)``.

    ``progress`` is what the milestones count (the epoch, or the step). During warm-up the factor
    rises linearly from ``warmup_ratio`` at step 0 to 1 at ``warmup_iters``.
    """
    factor = gamma ** sum(progress >= m for m in milestones)
    if warmup_iters > 0 and step < warmup_iters:
        factor *= 1.0 - (1.0 - step / warmup_iters) * (1.0 - warmup_ratio)
    return factor


class DetectionTask(BaseTask):
    """Oriented object detection (see the module docstring).

    Args:
        model: a :class:`~rsvit.models.ModelSpec` (or its dict; ``task`` may be left out), e.g.
            ``{backbone: resnet50, head_kwargs: {fpn_channels: 256}}``.
        num_classes, in_chans: override the spec's (linked from the data by the command line).
        weights: whole-model starting weights; backbone_weights: backbone-only (e.g. RSP / ImageNet).
        optimizer: optimiser factory from config.
        no_decay_keywords: parameter-name fragments trained without weight decay (official Swin /
            ViTAEv2: ``absolute_pos_embed``, ``relative_position_bias_table``, ``norm``).
        warmup_iters, warmup_ratio: linear warm-up (official 500 steps from 1/3).
        milestones, gamma, milestone_unit: step decay (official 1x: [8, 11] epochs, 0.1).
        iou_threshold: polygon IoU a detection needs to match (DOTA: 0.5).
        class_names: linked from the data (report, plots, exported metadata).
        num_plots: validation images drawn by the report.
    """

    family = "detection"
    default_backbone = "resnet50"
    default_optimizer = ("SGD", {"lr": 0.005, "momentum": 0.9, "weight_decay": 1e-4})
    progress_metric = "mAP"

    def __init__(
        self,
        model: ModelSpec | dict[str, Any] | None = None,
        num_classes: int | None = None,
        in_chans: int | None = None,
        weights: str | None = None,
        backbone_weights: str | None = None,
        optimizer: OptimizerCallable | None = None,
        no_decay_keywords: list[str] | None = None,
        warmup_iters: int = 500,
        warmup_ratio: float = 1.0 / 3.0,
        milestones: list[int] = [8, 11],  # noqa: B006 - shown by the CLI
        gamma: float = 0.1,
        milestone_unit: Literal["epoch", "step"] = "epoch",
        iou_threshold: float = 0.5,
        class_names: list[str] | None = None,
        num_plots: int = 4,
    ) -> None:
        super().__init__()
        if milestone_unit not in ("epoch", "step"):
            raise ValueError(f"milestone_unit must be 'epoch' or 'step', got {milestone_unit!r}")
        self.model = self.network_from(model, num_classes=num_classes, in_chans=in_chans)
        n_classes = int(self.model.num_classes)
        if class_names is not None and len(class_names) != n_classes:
            raise ValueError(f"{len(class_names)} class names for a detector of {n_classes} classes")
        self.save_hyperparameters(ignore=["optimizer", "model"])
        self.record_spec()
        self.num_classes = n_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(n_classes)]
        self.set_optimizer(optimizer)
        self.load_weights(weights, backbone_weights)
        self.evaluation: dict[str, dict[str, Any]] = {}
        self.examples: list[dict[str, Any]] = []
        self._detections: dict[str, dict[str, list[tuple[str, float, np.ndarray]]]] = {}
        self._ground_truth: dict[str, dict[str, DotaLabels]] = {}

    # -- steps ------------------------------------------------------------------------------------------

    def forward(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Per image ``boxes`` ``(D, 5)`` le90, ``scores``, ``labels`` (the detector in eval mode)."""
        return self.model(images)

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The detector's loss terms for a batch (``loss_*``, plus the RoI accuracy ``acc``)."""
        return self.model.loss(
            batch["image"],
            [b.to(batch["image"].device) for b in batch["boxes"]],
            [lab.to(batch["image"].device) for lab in batch["labels"]],
            image_sizes=[tuple(s) for s in batch["image_size"]],
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        parts = self.training_losses(batch)
        loss = sum(v for k, v in parts.items() if k.startswith("loss_"))
        n = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=n)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        return loss  # type: ignore[return-value]

    def evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        detections = self.model(batch["image"])
        found = self._detections.setdefault(stage, {})
        truth = self._ground_truth.setdefault(stage, {})
        for k, det in enumerate(detections):
            image_id = batch["image_id"][k]
            scale = _scale_factor(batch, k)
            polys = obb_to_poly(det["boxes"].detach().double().cpu()).numpy() / scale
            scores = det["scores"].detach().float().cpu().tolist()
            labels = det["labels"].detach().cpu().tolist()
            for poly, score, label in zip(polys, scores, labels, strict=True):
                found.setdefault(self.class_names[label], []).append((image_id, score, poly))
            gt_labels = batch["labels"][k].tolist()
            truth[image_id] = DotaLabels(
                batch["polygons"][k].numpy() / scale,
                [self.class_names[i] for i in gt_labels],
                batch["difficult"][k].numpy().astype(np.int64),
            )
            if stage == "val" and len(self.examples) < self.hparams.num_plots:
                self.examples.append(
                    {
                        "image": batch["image"][
                            k, :, : batch["image_size"][k][0], : batch["image_size"][k][1]
                        ]
                        .detach()
                        .cpu(),
                        "path": batch["path"][k],
                        "truth": replace(truth[image_id], polygons=truth[image_id].polygons * scale),
                        "polygons": polys * scale,
                        "scores": scores,
                        "classes": [self.class_names[i] for i in labels],
                    }
                )

    def compute_evaluation(self, stage: str) -> Evaluation:
        # Every process evaluated its shard: the mAP is computed on all of them together.
        found, truth = gather_evaluation(self._detections.pop(stage, {}), self._ground_truth.pop(stage, {}))
        threshold = float(self.hparams.iou_threshold)
        voc07 = evaluate_dota(found, truth, self.class_names, threshold, use_07_metric=True)
        area = evaluate_dota(found, truth, self.class_names, threshold, use_07_metric=False)
        per_class = {
            name: {
                "AP": voc07.per_class[name].ap,
                "AP_area": area.per_class[name].ap,
                "num_gt": voc07.per_class[name].num_gt,
                "num_difficult": voc07.per_class[name].num_difficult,
                "num_detections": voc07.per_class[name].num_detections,
            }
            for name in self.class_names
        }
        logged = [("mAP", voc07.map), ("mAP_area", area.map)]
        entry = {
            "mAP": voc07.map,
            "mAP_area": area.map,
            "iou_threshold": threshold,
            "images": len(truth),
            "per_class": per_class,
        }
        return Evaluation([(k, v) for k, v in logged if not math.isnan(v)], json_safe(entry))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list[Any]]:
        """Per image: ``path``, ``image_id``, ``image`` (display uint8), ``boxes``, ``scores``, ``labels``."""
        from rsvit.viz.images import display_image

        detections = self.model(batch["image"])
        images = []
        for k, (h, w) in enumerate(batch["image_size"]):
            image = batch["image"][k, :, :h, :w].detach().cpu()
            restored = self.undo_data_normalisation(image[None])
            images.append(display_image(restored[0].clamp(0, 1) if restored is not None else image))
        return {
            "path": list(batch["path"]),
            "image_id": list(batch["image_id"]),
            "image": images,
            "boxes": [
                _to_file_pixels(d["boxes"].detach().cpu(), _scale_factor(batch, k))
                for k, d in enumerate(detections)
            ],
            "scores": [d["scores"].detach().cpu() for d in detections],
            "labels": [d["labels"].detach().cpu() for d in detections],
        }

    # -- optimiser ----------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = self.make_optimizer(weight_decay_groups(self.model, hp.no_decay_keywords or ()))
        milestones = [int(m) for m in hp.milestones]

        def factor(step: int) -> float:
            progress = int(self.current_epoch) if hp.milestone_unit == "epoch" else step
            return warmup_step_factor(step, progress, milestones, hp.gamma, hp.warmup_iters, hp.warmup_ratio)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- export and command line ------------------------------------------------------------------

    def export_extra(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        return {"box_convention": "le90", "iou_threshold": float(self.hparams.iou_threshold)}

    @classmethod
    def command_line(cls) -> CommandLine:
        from rsvit.datamodules.detection import DetectionDataModule

        return CommandLine(
            datamodule=DetectionDataModule,
            links=(
                Link("num_classes", "num_classes", on_instantiate=True),
                Link("classes", "class_names", on_instantiate=True),
            ),
            callbacks={"report": DetectionReport, "prediction_writer": DetectionPredictionWriter},
        )


class DetectionReport(RunReport):
    """Writes ``metrics.json`` (mAP, per-class AP), validation drawings and ``model.safetensors``.

    Drawings in ``val_predictions/``: ground truth in white, detections above ``plot_score`` in their
    class colours with scores.

    Args:
        filename: report name inside the run folder.
        monitor: validation entry deciding the best evaluation (``mAP``: VOC07 11-point).
        export: file name of the exported model ('' to skip).
        plots: write the validation drawings.
        plot_score: lowest score drawn.
    """

    def __init__(
        self,
        filename: str = "metrics.json",
        monitor: str = "mAP",
        export: str = "model.safetensors",
        plots: bool = True,
        plot_score: float = 0.3,
    ) -> None:
        super().__init__(filename, monitor, export, plots)
        self.plot_score = plot_score

    def draw_examples(self, folder: Path, pl_module: L.LightningModule) -> None:
        from rsvit.viz.detection import draw_polygons, save_drawing
        from rsvit.viz.images import display_image

        for i, example in enumerate(getattr(pl_module, "examples", [])):
            image = example["image"]
            restored = pl_module.undo_data_normalisation(image[None])  # type: ignore[operator]
            if restored is not None:
                image = restored[0].clamp(0, 1)
            canvas = display_image(image)
            truth = example["truth"]
            white = {name: (255, 255, 255) for name in truth.classes}
            canvas = draw_polygons(canvas, truth.polygons, truth.classes, white, width=1)
            keep = [k for k, s in enumerate(example["scores"]) if s >= self.plot_score]
            canvas = draw_polygons(
                canvas,
                np.asarray(example["polygons"]).reshape(-1, 8)[keep],
                [example["classes"][k] for k in keep],
                scores=[example["scores"][k] for k in keep],
            )
            save_drawing(folder / f"{i:02d}_{safe_stem(example['path'], i)}.png", canvas)


def _scale_factor(batch: dict[str, Any], k: int) -> np.ndarray:
    """``(8,)`` x/y factors from the file's pixels to item ``k``'s (all 1 unless the data were resized)."""
    sx, sy = batch.get("scale_factor", [(1.0, 1.0)] * (k + 1))[k]
    return np.array([sx, sy] * 4, dtype=np.float64)


def _to_file_pixels(boxes: Tensor, scale: np.ndarray) -> Tensor:
    """Boxes ``(D, 5)`` le90 of a resized image in the image file's pixels (corners scaled back, refitted)."""
    if (scale == 1.0).all() or boxes.shape[0] == 0:
        return boxes
    polys = obb_to_poly(boxes.double()) / torch.from_numpy(scale)
    return poly_to_obb(polys, "le90").to(boxes.dtype)


class DetectionPredictionWriter(FolderPredictionWriter):
    """Writes ``<image>.png`` with the detections drawn, and at the end the DOTA Task1 submission.

    The submission (``task1/Task1_<class>.txt``, one file per class, ``image_id score x1 y1 ... y4``)
    holds every detection, and ``dota/<image_id>.txt`` the same detections per image as DOTA text
    (``x1 y1 ... y4 class score``, highest score first; :func:`rsvit.data.detection.labels.read_labels`
    reads it back with the scores). When the predicted images are DOTA patches (names
    ``<image>__<rate>__<x>___<y>``) and ``merge_patches`` is on, the patches are mapped back to their
    whole images first and duplicates across overlapping patches removed by per-class rotated NMS at
    ``merge_iou``.

    Args:
        output_dir: folder (default ``<run folder>/predictions``).
        draw: write the drawings; plot_score: lowest score drawn.
        merge_patches: merge patch detections into whole images for the submission.
        merge_iou: NMS threshold of the merge (DOTA: 0.1).
    """

    columns = ("path", "image_id", "image", "boxes", "scores", "labels")

    def __init__(
        self,
        output_dir: str | None = None,
        draw: bool = True,
        plot_score: float = 0.3,
        merge_patches: bool = True,
        merge_iou: float = 0.1,
    ) -> None:
        super().__init__(output_dir)
        self.draw = draw
        self.plot_score = plot_score
        self.merge_patches = merge_patches
        self.merge_iou = merge_iou
        self.items: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        self.folder: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.items = {}
        self.folder = Path(self.output_dir) if self.output_dir else run_dir(trainer) / "predictions"

    def write_item(self, folder: Path, name: str, item: dict[str, Any], pl_module: L.LightningModule) -> None:
        self.items[item["image_id"]] = (item["boxes"], item["scores"], item["labels"])
        if not self.draw:
            return
        from rsvit.viz.detection import draw_polygons, save_drawing

        keep = item["scores"] >= self.plot_score
        names = [pl_module.class_names[i] for i in item["labels"][keep].tolist()]  # type: ignore[index]
        canvas = draw_polygons(
            item["image"],
            obb_to_poly(item["boxes"][keep].double()).numpy(),
            names,
            scores=item["scores"][keep].tolist(),
        )
        path = folder / f"{name}.png"
        save_drawing(path, canvas)
        self.written.append(path)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.folder is None:
            return
        from rsvit.data.detection.labels import write_labels
        from rsvit.data.detection.split import merge_patch_detections
        from rsvit.metrics.detection import write_task1_submission

        classes = list(pl_module.class_names)  # type: ignore[arg-type]
        items = self.items
        if self.merge_patches and items:
            try:
                merged = merge_patch_detections(items, self.merge_iou)
            except ValueError:
                merged = None  # not DOTA patch names: the submission lists the images as they are
            if merged is not None:
                items = {k: (m.boxes, m.scores, m.labels) for k, m in merged.items()}
        found: dict[str, list[tuple[str, float, np.ndarray]]] = {}
        for image_id, (boxes, scores, labels) in items.items():
            order = torch.argsort(scores, descending=True, stable=True)
            boxes, scores, labels = boxes[order], scores[order], labels[order]
            polys = obb_to_poly(boxes.double()).numpy()
            for poly, score, label in zip(polys, scores.tolist(), labels.tolist(), strict=True):
                found.setdefault(classes[label], []).append((image_id, score, poly))
            text_path = self.folder / "dota" / f"{image_id}.txt"
            names = [classes[i] for i in labels.tolist()]
            flags = np.zeros(len(names), dtype=np.int64)
            write_labels(text_path, DotaLabels(polys, names, flags, scores=scores.double().numpy()))
            self.written.append(text_path)
        self.written.extend(write_task1_submission(self.folder / "task1", found, classes))
