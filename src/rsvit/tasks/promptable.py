"""``PromptableTask``: fine-tuning Segment Anything on image + mask data, with prompts drawn from the masks.

* Model: ``ModelSpec(task="promptable", backbone="sam_vit_b")`` (``head_kwargs`` override
  :class:`~rsvit.models.promptable.SamConfig` fields), starting from ``weights``: an rsvit model file or
  an official ``segment-anything`` checkpoint, loaded safely and strictly
  (:func:`~rsvit.tasks.promptable_tuning.load_sam_weights`).
* What trains: ``trainable`` = ``"decoder"``, ``"last_blocks"``, ``"lora"`` or ``"all"``
  (:mod:`rsvit.tasks.promptable_tuning`).
* Training: each image of a batch answers all its targets with one prompt kind drawn from
  ``train_prompts`` (``box``, ``noisy_box``, ``point``: one foreground point, ``points``: the positive
  and negative points); a single point asks for the three candidate masks and only the best is trained
  (:mod:`rsvit.tasks.promptable_losses`). Logits are upsampled to the input frame for the loss.
* Evaluation: every target is prompted with every kind of ``eval_prompts`` (the seeded prompts of the
  DataModule), the mask kept as at inference (for one point, the candidate of highest predicted IoU),
  and prompted mIoU is reported per kind (``mIoU_box`` ...) and as their mean (``mIoU``), beside the
  mIoU of two masks that need no model (``reference``: the filled tight box, the whole image).
* Before/after: at the start of fit the validation set is evaluated once with the starting weights
  (``evaluation["before"]``); :class:`PromptableReport` writes it beside the last validation and their
  difference (``fine_tuning`` in ``metrics.json``).
* Export: ``model.safetensors`` with the spec (adapters merged), which ``rsvit segment-raster`` and
  ``rsvit masks-raster`` read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from rsvit.metrics.promptable import PromptedIoU, mask_iou
from rsvit.models.spec import ModelSpec
from rsvit.tasks.base import BaseTask, CommandLine, Evaluation, Link, json_safe
from rsvit.tasks.optim import ScheduleName, WarmupDecay
from rsvit.tasks.promptable_losses import sam_loss
from rsvit.tasks.promptable_tuning import Trainable, add_lora, load_sam_weights, merge_lora, set_trainable
from rsvit.tasks.reports import RunReport

__all__ = ["PROMPT_KINDS", "PromptableReport", "PromptableTask"]

PROMPT_KINDS = ("box", "noisy_box", "point", "points")
# Masks that need no model, scored on the same targets: the filled tight box and the whole image.
REFERENCES = ("box_fill", "whole_image")


class PromptableTask(BaseTask):
    """Promptable segmentation fine-tuning (see the module docstring).

    Args:
        model: a promptable :class:`~rsvit.models.ModelSpec` (or its dict) or a ready SAM module.
        weights: starting weights (rsvit model file or official SAM checkpoint).
        in_chans: bands of the input (linked from the data; other than 3 widens the patch embedding).
        trainable: ``"decoder"``, ``"last_blocks"``, ``"lora"`` or ``"all"``.
        train_prompt_encoder: train the prompt encoder as well.
        num_blocks: encoder blocks trained with ``"last_blocks"``.
        lora_rank, lora_alpha: adapter rank and scale numerator (default ``alpha = rank``).
        lora_blocks: last encoder blocks that get adapters (``None``: all).
        train_prompts, eval_prompts: prompt kinds (of ``box``, ``noisy_box``, ``point``, ``points``).
        focal_weight, dice_weight, iou_weight: loss weights (SAM: 20, 1, 1).
        ignore_index: label of unlabelled pixels (linked from the data).
        evaluate_before: evaluate the validation set with the starting weights when fit starts.
        optimizer: optimiser factory from config (default AdamW, lr 1e-4, weight decay 0.01).
        schedule, warmup_iters: learning rate per step: linear warm-up, then ``cosine``, ``poly`` or
            ``constant`` (:class:`~rsvit.tasks.optim.WarmupDecay`).
        class_names: linked from the data (written in the report).
    """

    family = "promptable"
    default_backbone = "sam_vit_b"
    default_optimizer = ("AdamW", {"lr": 1e-4, "weight_decay": 0.01})
    progress_metric = "mIoU"

    def __init__(
        self,
        model: ModelSpec | dict[str, Any] | nn.Module | None = None,
        weights: str | None = None,
        in_chans: int | None = None,
        trainable: Trainable = "decoder",
        train_prompt_encoder: bool = False,
        num_blocks: int = 2,
        lora_rank: int = 4,
        lora_alpha: float | None = None,
        lora_blocks: int | None = None,
        train_prompts: list[str] = list(PROMPT_KINDS),  # noqa: B006 - shown as the default by the CLI
        eval_prompts: list[str] = ["box", "point"],  # noqa: B006
        focal_weight: float = 20.0,
        dice_weight: float = 1.0,
        iou_weight: float = 1.0,
        ignore_index: int = 255,
        evaluate_before: bool = True,
        optimizer: OptimizerCallable | None = None,
        schedule: ScheduleName = "cosine",
        warmup_iters: int = 0,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        for kind in [*train_prompts, *eval_prompts]:
            if kind not in PROMPT_KINDS:
                raise ValueError(f"unknown prompt kind {kind!r}; choose from {', '.join(PROMPT_KINDS)}")
        if not train_prompts or not eval_prompts:
            raise ValueError("train_prompts and eval_prompts need at least one prompt kind each")
        self.model = self.network_from(model, in_chans=in_chans)
        if not all(hasattr(self.model, m) for m in ("image_encoder", "prompt_encoder", "mask_decoder")):
            raise ValueError(
                f"{type(self.model).__name__} is not a promptable model (image_encoder, prompt_encoder, "
                "mask_decoder)"
            )
        self.save_hyperparameters(ignore=["optimizer", "model"])
        self.record_spec()
        self.set_optimizer(optimizer)
        if weights:
            load_sam_weights(self.model, weights)
        if trainable == "lora":
            add_lora(self.model, lora_rank, lora_alpha, lora_blocks)
        set_trainable(self.model, trainable, num_blocks, train_prompt_encoder)
        self.model.train()  # built in eval mode; nothing in SAM depends on the mode, Lightning sets it anyway
        self.class_names = list(class_names) if class_names else []
        self.train_kinds = list(train_prompts)
        self.eval_kinds = list(eval_prompts)
        for stage in ("val", "test", "before"):
            setattr(self, f"{stage}_iou", PromptedIoU([*self.eval_kinds, *REFERENCES]))
        self.evaluation: dict[str, dict[str, Any]] = {}
        self.examples: list[dict[str, Any]] = []

    # -- model pieces -------------------------------------------------------------------------------

    @property
    def img_size(self) -> int:
        return int(self.model.img_size)

    def encoder_trains(self) -> bool:
        return any(p.requires_grad for p in self.model.image_encoder.parameters())

    def embed(self, images: Tensor, sizes: Tensor) -> Tensor:
        """``(B, C, S, S)`` padded 0-255 images -> embeddings, normalised as ``Sam.preprocess`` does."""
        if images.shape[-1] != self.img_size or images.shape[-2] != self.img_size:
            raise ValueError(
                f"images of {tuple(images.shape[-2:])} for a model with input {self.img_size}; set the "
                f"DataModule's img_size to {self.img_size}"
            )
        x = (images.float() - self.model.pixel_mean) / self.model.pixel_std
        rows = torch.arange(self.img_size, device=x.device)
        inside = (rows[None, :, None] < sizes[:, 0, None, None]) & (
            rows[None, None, :] < sizes[:, 1, None, None]
        )
        x = x * inside[:, None]  # padding is 0 after normalisation, as in Sam.preprocess
        with nullcontext() if self.encoder_trains() and torch.is_grad_enabled() else torch.no_grad():
            return self.model.image_encoder(x)

    def decode(self, embedding: Tensor, batch: dict[str, Any], i: int, kind: str) -> tuple[Tensor, Tensor]:
        """Logits ``(N, K, S, S)`` and IoU predictions ``(N, K)`` for the targets of image ``i``."""
        points = boxes = None
        if kind in ("box", "noisy_box"):
            boxes = batch["boxes" if kind == "box" else "noisy_boxes"][i].float()
        else:
            coords, labels = batch["point_coords"][i].float(), batch["point_labels"][i]
            points = (coords[:, :1], labels[:, :1]) if kind == "point" else (coords, labels)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes)
        low_res, iou = self.model.mask_decoder(
            embedding, self.model.prompt_encoder.get_dense_pe(), sparse, dense, kind == "point"
        )
        logits = F.interpolate(low_res, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        return logits, iou

    def predict_masks(self, embedding: Tensor, batch: dict[str, Any], i: int, kind: str) -> Tensor:
        """Boolean masks ``(N, S, S)`` of image ``i`` (of several candidates, the highest predicted IoU)."""
        logits, iou = self.decode(embedding, batch, i, kind)
        best = iou.argmax(dim=1)
        return logits[torch.arange(len(best), device=logits.device), best] > self.model.mask_threshold

    def forward(self, batch: dict[str, Any], kind: str = "box") -> list[Tensor]:
        """Predicted masks ``(N, S, S)`` per image, every target prompted with ``kind``."""
        embeddings = self.embed(batch["image"], batch["size"])
        return [
            self.predict_masks(embeddings[i : i + 1], batch, i, kind)
            if len(batch["masks"][i])
            else torch.zeros(0, self.img_size, self.img_size, dtype=torch.bool, device=embeddings.device)
            for i in range(embeddings.shape[0])
        ]

    # -- training -----------------------------------------------------------------------------------

    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]] | None:
        """Mean SAM loss over the targets of a batch (``None`` when the batch has no target)."""
        hp = self.hparams
        embeddings = self.embed(batch["image"], batch["size"])
        losses: list[Tensor] = []
        parts: dict[str, list[Tensor]] = {"focal": [], "dice": [], "iou": []}
        for i in range(embeddings.shape[0]):
            target = batch["masks"][i]
            if len(target) == 0:
                continue
            kind = self.train_kinds[int(torch.randint(len(self.train_kinds), (1,)))]
            logits, iou = self.decode(embeddings[i : i + 1], batch, i, kind)
            valid = batch["labels"][i] != hp.ignore_index
            loss, part = sam_loss(logits, iou, target, valid, hp.focal_weight, hp.dice_weight, hp.iou_weight)
            losses.append(loss)
            for name, value in part.items():
                parts[name].append(value.detach())
        if not losses:
            return None
        return torch.cat(losses).mean(), {k: torch.cat(v).mean() for k, v in parts.items()}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        result = self.training_loss(batch)
        if result is None:
            return None  # no target in this batch: nothing to learn
        loss, parts = result
        n = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for name, value in parts.items():
            self.log(f"train/loss_{name}", value, batch_size=n)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        return loss

    # -- evaluation ---------------------------------------------------------------------------------

    def evaluate_batch(self, batch: dict[str, Any], metric: PromptedIoU) -> None:
        """Adds the prompted IoUs of every target and evaluation prompt kind of a batch to ``metric``."""
        embeddings = self.embed(batch["image"], batch["size"])
        for i in range(embeddings.shape[0]):
            target = batch["masks"][i]
            if len(target) == 0:
                continue
            valid = batch["labels"][i] != self.hparams.ignore_index
            for kind in self.eval_kinds:
                pred = self.predict_masks(embeddings[i : i + 1], batch, i, kind)
                metric.update(kind, mask_iou(pred, target, valid))
            metric.update("box_fill", mask_iou(_filled_boxes(batch["boxes"][i], valid.shape), target, valid))
            metric.update("whole_image", mask_iou(valid.expand_as(target), target, valid))

    def evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        self.evaluate_batch(batch, getattr(self, f"{stage}_iou"))

    def _entry(self, result: dict[str, float]) -> dict[str, Any]:
        means = [result[k] for k in self.eval_kinds if not math.isnan(result[k])]
        entry: dict[str, Any] = {"mIoU": sum(means) / len(means) if means else float("nan")}
        for kind in self.eval_kinds:
            entry[f"mIoU_{kind}"] = result[kind]
            entry[f"prompts_{kind}"] = int(result[f"n_{kind}"])
        entry["reference"] = {name: result[name] for name in REFERENCES}
        return entry

    def compute_evaluation(self, stage: str) -> Evaluation:
        metric = getattr(self, f"{stage}_iou")
        result = metric.compute()
        metric.reset()
        if self.trainer.sanity_checking:
            return Evaluation([], {})
        entry = self._entry(result)
        logged = [(k, float(v)) for k, v in entry.items() if k.startswith("mIoU") and not math.isnan(v)]
        return Evaluation(logged, json_safe(entry))

    @torch.no_grad()
    def measure_before(self) -> dict[str, Any] | None:
        """Prompted mIoU of the validation set with the current (starting) weights, once per fit."""
        if "before" in self.evaluation:
            return self.evaluation["before"]
        datamodule = self.attached_datamodule()
        if datamodule is not None and hasattr(datamodule, "val_dataloader"):
            loader = datamodule.val_dataloader()
        else:
            loader = getattr(self.trainer, "val_dataloaders", None)
        if loader is None:
            rank_zero_warn("no validation data: prompted mIoU before fine-tuning not measured")
            return None
        was_training = self.training
        self.eval()
        metric = self.before_iou
        metric.reset()
        for batch in loader:
            self.evaluate_batch(self.transfer_batch_to_device(batch, self.device, 0), metric)
        entry = json_safe({"step": int(self.global_step), **self._entry(metric.compute())})
        metric.reset()
        self.train(was_training)
        self.evaluation["before"] = entry
        rank_zero_info(
            "prompted mIoU before fine-tuning: "
            + ", ".join(
                f"{k} {entry[f'mIoU_{k}']:.4f}" for k in self.eval_kinds if entry[f"mIoU_{k}"] is not None
            )
        )
        return entry

    def on_train_start(self) -> None:
        if self.hparams.evaluate_before:
            self.measure_before()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "before" in self.evaluation:  # a resumed run keeps the figures of the real start
            checkpoint["prompted_before"] = self.evaluation["before"]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "prompted_before" in checkpoint:
            self.evaluation["before"] = checkpoint["prompted_before"]

    # -- optimisation -------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: every parameter is frozen")
        optimizer = self.make_optimizer(params)
        total = int(self.trainer.estimated_stepping_batches)
        if total <= 0 or total == math.inf:
            raise ValueError("the schedule needs a finite number of steps: set max_steps or max_epochs")

        factor = WarmupDecay(total, min(hp.warmup_iters, total), hp.schedule)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- export ---------------------------------------------------------------------------------------

    @contextmanager
    def _plain_model(self) -> Any:
        """``self.model`` with adapters merged, for as long as the export runs."""
        trained = self.model
        self.model = merge_lora(trained)
        try:
            yield
        finally:
            self.model = trained

    def export_model(self, path: Any, preprocessing: dict[str, Any] | None = None) -> Path:
        """Writes the fine-tuned model (adapters merged) as an rsvit model file for ``segment-raster``."""
        with self._plain_model():
            return super().export_model(path, preprocessing)

    def export_classes(self) -> tuple[str, ...] | None:
        return None  # a promptable model has no classes; the ones it was tuned on are in export_extra

    def export_extra(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        hp = self.hparams
        extra: dict[str, Any] = {"fine_tuned": str(hp.trainable), "tuned_on_classes": self.class_names}
        if "before" in self.evaluation:
            extra["prompted_miou_before"] = self.evaluation["before"].get("mIoU")
        if "val" in self.evaluation:
            extra["prompted_miou_after"] = self.evaluation["val"].get("mIoU")
        return extra

    @classmethod
    def command_line(cls) -> CommandLine:
        from rsvit.datamodules.promptable import PromptableDataModule

        return CommandLine(
            datamodule=PromptableDataModule,
            links=(
                Link("classes", "class_names", on_instantiate=True),
                Link("ignore_index", "ignore_index"),
                Link("in_chans", "in_chans"),
            ),
            callbacks={"report": PromptableReport},
        )


def _filled_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """``(N, H, W)`` masks of the pixels whose centres lie in each box."""
    ys = torch.arange(size[0], device=boxes.device)[None, :, None]
    xs = torch.arange(size[1], device=boxes.device)[None, None, :]
    x0, y0, x1, y1 = (boxes[:, k, None, None] for k in range(4))
    return (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)


def _comparison(before: dict[str, Any] | None, after: dict[str, Any] | None, kinds: Sequence[str]) -> dict:
    if not before or not after:
        return {}
    out = {}
    for name in ["mIoU", *(f"mIoU_{k}" for k in kinds)]:
        a, b = before.get(name), after.get(name)
        if a is not None and b is not None:
            out[name] = {"before": a, "after": b, "change": b - a}
    return out


class PromptableReport(RunReport):
    """``metrics.json`` with prompted mIoU before and after fine-tuning, and ``model.safetensors``.

    Args:
        filename: report name inside the run folder.
        monitor: validation entry deciding the best evaluation (``mIoU`` or ``mIoU_<kind>``).
        export: file name of the exported model ('' to skip).
    """

    def __init__(
        self, filename: str = "metrics.json", monitor: str = "mIoU", export: str = "model.safetensors"
    ) -> None:
        super().__init__(filename, monitor, export, plots=False)

    def header(self, pl_module: L.LightningModule) -> dict[str, Any]:
        evaluation = getattr(pl_module, "evaluation", {})
        before = evaluation.get("before")
        hp = pl_module.hparams
        trained = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        total = sum(p.numel() for p in pl_module.parameters())
        return {
            "classes": list(getattr(pl_module, "class_names", [])),
            "trainable": {"mode": hp.get("trainable"), "parameters": trained, "of": total},
            "before": before,
            "fine_tuning": _comparison(before, self.last.get("val"), getattr(pl_module, "eval_kinds", [])),
        }

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluate: Callable[[], Any] | None = getattr(pl_module, "measure_before", None)
        if evaluate is not None and pl_module.hparams.get("evaluate_before", True):
            evaluate()
            self._write(trainer, pl_module)
