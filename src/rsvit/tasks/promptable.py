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
* Interactive rounds (``correction_rounds``, ``mask_only_rounds``; off by default): as in the SAM paper's
  training, each first prediction is followed by rounds that feed the previous low-res logits back as
  the mask prompt and add a click drawn from the error region
  (:mod:`rsvit.data.promptable.corrections`), or only the mask. The image is embedded once; only the
  prompt encoder and decoder run per round, and what a round takes from the previous one is detached.
  The loss is the mean over rounds.
* Evaluation: every target is prompted with every kind of ``eval_prompts`` (the seeded prompts of the
  DataModule), the mask kept as at inference (for one point, the candidate of highest predicted IoU),
  and prompted mIoU is reported per kind (``mIoU_box`` ...) and as their mean (``mIoU``), beside the
  mIoU of two masks that need no model (``reference``: the filled tight box, the whole image).
  With ``interactive_eval`` (on by default with rounds), each target is also prompted with
  ``interactive_prompt`` followed by seeded correction clicks, and the mIoU after each listed number of
  clicks is reported (``mIoU_interactive_<n>``).
* Before/after: at the start of fit the validation set is evaluated once with the starting weights
  (``evaluation["before"]``); :class:`PromptableReport` writes it beside the last validation and their
  difference (``fine_tuning`` in ``metrics.json``).
* Export: ``model.safetensors`` with the spec (adapters merged), which ``rsvit segment-raster`` and
  ``rsvit masks-raster`` read.
"""

from __future__ import annotations

import math
import zlib
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

from rsvit.data.promptable.corrections import error_region_points, round_schedule
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
        correction_rounds: training rounds after the first prediction that add a click from the error
            region (SAM: 8); 0 trains on the first prediction only.
        mask_only_rounds: rounds that only feed the previous mask back (SAM: 2; one is the last round,
            the others take random places); needs ``correction_rounds >= 1``.
        interactive_eval: numbers of correction clicks after which validation reports mIoU
            (``None``: ``[1, 3, 5]`` with rounds on, none without).
        interactive_prompt: the first prompt of the interactive evaluation.
        interactive_seed: seed of the evaluation clicks (drawn per image from the seed and its path).
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
        correction_rounds: int = 0,
        mask_only_rounds: int = 0,
        interactive_eval: list[int] | None = None,
        interactive_prompt: str = "point",
        interactive_seed: int = 0,
    ) -> None:
        super().__init__()
        self.interactive_clicks = _check_rounds(
            correction_rounds, mask_only_rounds, interactive_eval, interactive_prompt
        )
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
        self.interactive_names = [f"interactive_{n}" for n in self.interactive_clicks]
        for stage in ("val", "test", "before"):
            setattr(
                self, f"{stage}_iou", PromptedIoU([*self.eval_kinds, *self.interactive_names, *REFERENCES])
            )
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

    @staticmethod
    def prompts(
        batch: dict[str, Any], i: int, kind: str
    ) -> tuple[tuple[Tensor, Tensor] | None, Tensor | None]:
        """The points and boxes of ``kind`` for the targets of image ``i``."""
        if kind in ("box", "noisy_box"):
            return None, batch["boxes" if kind == "box" else "noisy_boxes"][i].float()
        coords, labels = batch["point_coords"][i].float(), batch["point_labels"][i]
        return ((coords[:, :1], labels[:, :1]) if kind == "point" else (coords, labels)), None

    def decode_prompts(
        self,
        embedding: Tensor,
        points: tuple[Tensor, Tensor] | None,
        boxes: Tensor | None,
        masks: Tensor | None = None,
        multimask: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Logits ``(N, K, S, S)``, IoU predictions ``(N, K)`` and low-res logits ``(N, K, L, L)``."""
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=masks)
        low_res, iou = self.model.mask_decoder(
            embedding, self.model.prompt_encoder.get_dense_pe(), sparse, dense, multimask
        )
        logits = F.interpolate(low_res, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        return logits, iou, low_res

    def decode(self, embedding: Tensor, batch: dict[str, Any], i: int, kind: str) -> tuple[Tensor, Tensor]:
        """Logits ``(N, K, S, S)`` and IoU predictions ``(N, K)`` for the targets of image ``i``."""
        points, boxes = self.prompts(batch, i, kind)
        logits, iou, _ = self.decode_prompts(embedding, points, boxes, None, kind == "point")
        return logits, iou

    def next_round(
        self,
        embedding: Tensor,
        state: tuple[Tensor, Tensor, Tensor],
        points: tuple[Tensor, Tensor] | None,
        boxes: Tensor | None,
        target: Tensor,
        valid: Tensor,
        click: bool,
        generator: torch.Generator | None = None,
    ) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor] | None]:
        """One interactive round after ``state`` = (logits, IoU predictions, low-res logits).

        The candidate of highest predicted IoU is the previous mask (as the paper does): its low-res
        logits become the mask prompt and, when ``click``, a point from its error region joins the
        points. Both are taken without gradient. Returns the new state and the points now in use.
        """
        logits, iou, low_res = state
        with torch.no_grad():
            best = iou.argmax(dim=1)
            rows = torch.arange(len(best), device=best.device)
            previous = low_res[rows, best][:, None].detach()
            if click:
                pred = logits[rows, best].detach() > self.model.mask_threshold
                coords, labels = error_region_points(pred, target, valid, generator)
                labels = labels.to(target.device)
                if points is not None:
                    coords = torch.cat([points[0], coords], dim=1)
                    labels = torch.cat([points[1].to(labels.dtype), labels], dim=1)
                points = (coords, labels)
        return self.decode_prompts(embedding, points, boxes, previous, False), points

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
            valid = batch["labels"][i] != hp.ignore_index
            if hp.correction_rounds:
                loss, part = self.rounds_loss(embeddings[i : i + 1], batch, i, kind, target, valid)
            else:
                logits, iou = self.decode(embeddings[i : i + 1], batch, i, kind)
                loss, part = sam_loss(
                    logits, iou, target, valid, hp.focal_weight, hp.dice_weight, hp.iou_weight
                )
            losses.append(loss)
            for name, value in part.items():
                parts[name].append(value.detach())
        if not losses:
            return None
        return torch.cat(losses).mean(), {k: torch.cat(v).mean() for k, v in parts.items()}

    def rounds_loss(
        self, embedding: Tensor, batch: dict[str, Any], i: int, kind: str, target: Tensor, valid: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """SAM loss per target ``(N,)`` averaged over the first prediction and the interactive rounds.

        The mean (not the sum) keeps the loss, and so the learning rate that suits it, on the scale of a
        run without rounds. Clicks and the schedule come from torch's global generator
        (``seed_everything``).
        """
        hp = self.hparams
        weights = (hp.focal_weight, hp.dice_weight, hp.iou_weight)
        points, boxes = self.prompts(batch, i, kind)
        state = self.decode_prompts(embedding, points, boxes, None, kind == "point")
        losses, parts = [], []
        for click in [None, *round_schedule(hp.correction_rounds, hp.mask_only_rounds)]:
            if click is not None:
                state, points = self.next_round(embedding, state, points, boxes, target, valid, click)
            loss, part = sam_loss(state[0], state[1], target, valid, *weights)
            losses.append(loss)
            parts.append(part)
        return torch.stack(losses).mean(0), {k: torch.stack([p[k] for p in parts]).mean(0) for k in parts[0]}

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
            if self.interactive_clicks:
                generator = self.click_generator(batch, i)
                for clicks, ious in self.interactive_ious(embeddings[i : i + 1], batch, i, generator).items():
                    metric.update(f"interactive_{clicks}", ious)
            metric.update("box_fill", mask_iou(_filled_boxes(batch["boxes"][i], valid.shape), target, valid))
            metric.update("whole_image", mask_iou(valid.expand_as(target), target, valid))

    def click_generator(self, batch: dict[str, Any], i: int) -> torch.Generator:
        """The generator of image ``i``'s evaluation clicks, seeded by ``interactive_seed`` and the path.

        So every evaluation (before and after, any batch order) clicks the same way for the same masks.
        """
        name = str(batch["path"][i]) if "path" in batch else str(i)
        seed = zlib.crc32(f"{self.hparams.interactive_seed}:{name}".encode())
        return torch.Generator().manual_seed(seed)

    def interactive_ious(
        self, embedding: Tensor, batch: dict[str, Any], i: int, generator: torch.Generator
    ) -> dict[int, Tensor]:
        """IoU per target of image ``i`` after each number of clicks in ``interactive_eval``."""
        kind = self.hparams.interactive_prompt
        target = batch["masks"][i]
        valid = batch["labels"][i] != self.hparams.ignore_index
        points, boxes = self.prompts(batch, i, kind)
        state = self.decode_prompts(embedding, points, boxes, None, kind == "point")
        out: dict[int, Tensor] = {}
        for clicks in range(max(self.interactive_clicks) + 1):
            if clicks:
                state, points = self.next_round(
                    embedding, state, points, boxes, target, valid, True, generator
                )
            if clicks in self.interactive_clicks:
                logits, iou, _ = state
                best = iou.argmax(dim=1)
                pred = logits[torch.arange(len(best), device=best.device), best] > self.model.mask_threshold
                out[clicks] = mask_iou(pred, target, valid)
        return out

    def evaluation_step(self, batch: dict[str, Any], stage: str) -> None:
        self.evaluate_batch(batch, getattr(self, f"{stage}_iou"))

    def _entry(self, result: dict[str, float]) -> dict[str, Any]:
        means = [result[k] for k in self.eval_kinds if not math.isnan(result[k])]
        entry: dict[str, Any] = {"mIoU": sum(means) / len(means) if means else float("nan")}
        for kind in self.eval_kinds:
            entry[f"mIoU_{kind}"] = result[kind]
            entry[f"prompts_{kind}"] = int(result[f"n_{kind}"])
        for name in self.interactive_names:
            entry[f"mIoU_{name}"] = result[name]
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


def _check_rounds(
    correction_rounds: int, mask_only_rounds: int, interactive_eval: list[int] | None, interactive_prompt: str
) -> list[int]:
    """Checks the interactive options; returns the click counts evaluated."""
    for name, value in (("correction_rounds", correction_rounds), ("mask_only_rounds", mask_only_rounds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0 (SAM trains with 8 and 2), got {value!r}")
    if mask_only_rounds and not correction_rounds:
        raise ValueError(
            f"mask_only_rounds={mask_only_rounds} needs correction_rounds >= 1; correction_rounds=0 "
            "means no interactive rounds"
        )
    if interactive_prompt not in PROMPT_KINDS:
        raise ValueError(
            f"unknown interactive_prompt {interactive_prompt!r}; choose from {', '.join(PROMPT_KINDS)}"
        )
    if interactive_eval is None:
        return [1, 3, 5] if correction_rounds else []
    clicks = list(interactive_eval)
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in clicks):
        raise ValueError(f"interactive_eval takes click counts (integers >= 0), got {interactive_eval!r}")
    if len(set(clicks)) != len(clicks):
        raise ValueError(f"interactive_eval lists a click count twice: {interactive_eval!r}")
    return sorted(clicks)


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
            "fine_tuning": _comparison(
                before,
                self.last.get("val"),
                [*getattr(pl_module, "eval_kinds", []), *getattr(pl_module, "interactive_names", [])],
            ),
        }

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluate: Callable[[], Any] | None = getattr(pl_module, "measure_before", None)
        if evaluate is not None and pl_module.hparams.get("evaluate_before", True):
            evaluate()
            self._write(trainer, pl_module)
