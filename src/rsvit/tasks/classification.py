"""``ClassificationTask``: scene recognition and MillionAID pretraining (RSP recipe) in Lightning.

What the task adds to the network from :func:`rsvit.models.classifier.build_classifier`:

* optimiser from config (default AdamW, betas (0.9, 0.999), eps 1e-8, weight decay 0.05) over two
  parameter groups: without weight decay for biases, 1-D parameters (norms) and the model's
  ``no_weight_decay()`` names and ``no_decay_keywords``;
* RSP's linear learning-rate scaling: ``lr = base_lr * batch_size * world_size / lr_scale_batch``,
  applied to the optimiser's lr and to the warm-up and minimum lr of the schedule;
* timm's ``CosineLRScheduler`` stepped per optimiser step, with optional warm-up;
* Mixup/CutMix with label smoothing (timm) and ``SoftTargetCrossEntropy``, plain cross-entropy for
  evaluation;
* top-1, top-5, per-class accuracy and the confusion matrix (torchmetrics, synchronised across
  processes); the last results are kept in ``evaluation`` for :mod:`rsvit.tasks.reports`.

Gradient clipping and mixed precision are Trainer settings (``gradient_clip_val: 5.0``,
``precision: bf16-mixed``). Checkpoints also hold the global random states, so that a resumed run
draws the same shuffles and augmentations as an uninterrupted one.
"""

from __future__ import annotations

import functools
import random
import warnings
from typing import Any

import numpy as np
import torch
from lightning.pytorch.cli import OptimizerCallable
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from rsvit.data.classification.transforms import build_mixup
from rsvit.models.classifier import build_classifier
from rsvit.models.spec import ModelSpec, task_spec
from rsvit.tasks.base import BaseTask, CommandLine, Evaluation, Link
from rsvit.tasks.optim import weight_decay_groups

__all__ = ["ClassificationTask"]


def __getattr__(name: str) -> Any:
    if name == "parameter_groups":
        warnings.warn(
            "rsvit.tasks.classification.parameter_groups moved to rsvit.tasks.optim.weight_decay_groups "
            "(skip_norms_and_biases=True)",
            DeprecationWarning,
            stacklevel=2,
        )
        return functools.partial(weight_decay_groups, skip_norms_and_biases=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _rng_states() -> dict[str, Any]:
    """Global random states in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [
            str(kind),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            gauss,
        ],
        "python": [int(version), list(state), py_gauss],
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, py_gauss = states["python"]
    random.setstate((version, tuple(state), py_gauss))


class ClassificationTask(BaseTask):
    """Scene classification / supervised pretraining (see the module docstring).

    Args:
        backbone: network name (``resnet50``, ``swin_t``, ``vitaev2_s``, ``resnet18``, any timm name), the
            older spelling of ``model.backbone`` (kept so earlier configs and checkpoints load).
        num_classes: classifier outputs (linked from the data by ``rsvit fit``).
        in_chans: input bands (linked from the data).
        drop_path_rate: stochastic depth, the older spelling of ``model.backbone_kwargs.drop_path_rate``.
        weights: initial weights, any file ``rsvit.weights.load`` reads; the head is zeroed when the
            class count differs.
        optimizer: optimiser factory from config; its lr is the base lr before scaling.
        lr_scale_batch: divisor of the RSP scaling (512); 0 disables scaling.
        batch_size: batch per process (linked from the data).
        warmup_epochs, warmup_lr, min_lr: schedule (lrs before scaling, as RSP configures them).
        scheduler: ``"cosine"`` or ``"constant"``.
        no_decay_keywords: extra parameter-name fragments without weight decay.
        mixup_alpha, cutmix_alpha, mixup_prob, mixup_switch_prob, mixup_mode: timm Mixup; alphas 0 = off.
        label_smoothing: applied to the (mixed) targets.
        class_names: names of the classes (linked from the data; for reports and exported weights).
        top_k: the second accuracy reported (top-5).
        channels_last: memory format for convnets (faster on CPU).
        model: the network as a classification :class:`~rsvit.models.ModelSpec` dict, e.g.
            ``{backbone: vitaev2_s, backbone_kwargs: {drop_path_rate: 0.1}}`` (``task``, ``num_classes``
            and ``in_chans`` may be left out: the latter two come from the data).
    """

    family = "classification"
    default_backbone = "resnet50"
    default_optimizer = (
        "AdamW",
        {"lr": 5e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.05},
    )  # RSP's
    progress_metric = "acc1"
    sync_eval_logs = True

    def __init__(
        self,
        backbone: str | None = None,
        num_classes: int = 51,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        weights: str | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scale_batch: int = 512,
        batch_size: int = 128,
        warmup_epochs: float = 0.0,
        warmup_lr: float = 5e-7,
        min_lr: float = 5e-6,
        scheduler: str = "cosine",
        no_decay_keywords: list[str] | None = None,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        mixup_mode: str = "batch",
        label_smoothing: float = 0.1,
        class_names: list[str] | None = None,
        top_k: int = 5,
        channels_last: bool = False,
        model: dict[str, Any] | ModelSpec | None = None,  # a dict first: the config may leave out `task`
    ) -> None:
        super().__init__()
        if scheduler not in ("cosine", "constant"):
            raise ValueError(f"scheduler must be 'cosine' or 'constant', got {scheduler!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        spec = self._spec(model, backbone, num_classes, in_chans, drop_path_rate)
        self.spec = spec
        self.save_hyperparameters(ignore=["optimizer", "model"])
        self.record_spec()
        self.hparams["backbone"] = spec.backbone  # what checkpoints and export-backbone read
        self.hparams["drop_path_rate"] = float(spec.backbone_kwargs.get("drop_path_rate", 0.0))
        self.set_optimizer(optimizer)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.model = build_classifier(
            spec.backbone, num_classes, in_chans, weights=weights, **spec.backbone_kwargs
        )
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mixup = build_mixup(
            num_classes, mixup_alpha, cutmix_alpha, mixup_prob, mixup_switch_prob, mixup_mode, label_smoothing
        )
        self.train_loss_fn: nn.Module = (
            SoftTargetCrossEntropy() if self.mixup else nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        )
        self.hard_loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.eval_loss_fn = nn.CrossEntropyLoss()
        k = min(top_k, num_classes)
        self.top_k = k
        for stage in ("val", "test"):
            metrics = MetricCollection(
                {
                    "acc1": MulticlassAccuracy(num_classes, average="micro"),
                    f"acc{k}": MulticlassAccuracy(num_classes, top_k=k, average="micro"),
                    "per_class": MulticlassAccuracy(num_classes, average="none"),
                    "confusion": MulticlassConfusionMatrix(num_classes),
                    "loss": MeanMetric(),
                },
                compute_groups=False,
            )
            setattr(self, f"{stage}_metrics", metrics)
        self.evaluation: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _spec(
        model: ModelSpec | dict[str, Any] | None,
        backbone: str | None,
        num_classes: int,
        in_chans: int,
        drop_path_rate: float,
    ) -> ModelSpec:
        """The classification spec from ``model``, or from the older ``backbone``/``drop_path_rate``."""
        base = model.to_dict() if isinstance(model, ModelSpec) else dict(model or {})
        if backbone is not None:
            if base.get("backbone", backbone) != backbone:
                raise ValueError(
                    f"backbone {backbone!r} contradicts model.backbone {base['backbone']!r}; give one"
                )
            base["backbone"] = backbone
        if drop_path_rate:
            base["backbone_kwargs"] = {
                "drop_path_rate": drop_path_rate,
                **(base.get("backbone_kwargs") or {}),
            }
        return task_spec(
            base,
            "classification",
            "resnet50",
            "ClassificationTask",
            num_classes=num_classes,
            in_chans=in_chans,
        )

    # -- forward and steps -----------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> Tensor | None:
        if batch is None:  # every image of the batch was unreadable and skipped
            return None
        images, labels = batch["image"], batch["label"]
        if self.mixup is not None and images.shape[0] % 2 == 0:
            images, targets = self.mixup(images, labels)
            loss = self.train_loss_fn(self(images), targets)
        else:  # Mixup pairs samples: an odd batch (after skipped images) trains on hard labels
            loss = self.hard_loss_fn(self(images), labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=images.shape[0])
        return loss

    def evaluation_step(self, batch: dict[str, Any] | None, stage: str) -> None:
        if batch is None:
            return
        logits = self(batch["image"])
        labels = batch["label"]
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        loss = self.eval_loss_fn(logits, labels)
        for name, metric in metrics.items():
            if name == "loss":
                metric.update(loss, weight=labels.shape[0])
            else:
                metric.update(logits, labels)

    def predict_step(self, batch: dict[str, Any] | None, batch_idx: int, dataloader_idx: int = 0) -> Any:
        if batch is None:
            return None
        probs = self(batch["image"]).float().softmax(dim=1)
        return {"path": list(batch["path"]), "probs": probs}

    def compute_evaluation(self, stage: str) -> Evaluation:
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        values = {name: metric.compute() for name, metric in metrics.items()}  # synchronised
        metrics.reset()
        k = self.top_k
        scalars = {
            "acc1": float(values["acc1"]),
            f"acc{k}": float(values[f"acc{k}"]),
            "loss": float(values["loss"]),
        }
        entry = {
            **scalars,
            "per_class": {
                name: float(v) for name, v in zip(self.class_names, values["per_class"].tolist(), strict=True)
            },
            "confusion": values["confusion"].long().tolist(),
        }
        return Evaluation(list(scalars.items()), entry)

    @classmethod
    def command_line(cls) -> CommandLine:
        from rsvit.datamodules.classification import SceneDataModule
        from rsvit.tasks.reports import MetricsReport
        from rsvit.tasks.writers import PredictionWriter

        return CommandLine(
            datamodule=SceneDataModule,
            links=(
                Link("num_classes", "num_classes", on_instantiate=True),
                Link("classes", "class_names", on_instantiate=True),
                Link("in_chans", "in_chans"),
                Link("batch_size", "batch_size"),
            ),
            callbacks={"report": MetricsReport, "prediction_writer": PredictionWriter},
        )

    # -- optimisation ----------------------------------------------------------------------------------

    def lr_scale(self) -> float:
        """RSP's linear scaling factor ``batch_size * world_size / lr_scale_batch`` (1 when disabled)."""
        if not self.hparams.lr_scale_batch:
            return 1.0
        world = self.trainer.world_size if self._trainer is not None else 1
        return self.hparams.batch_size * world / self.hparams.lr_scale_batch

    def configure_optimizers(self) -> Any:
        groups = weight_decay_groups(
            self.model, self.hparams.no_decay_keywords or (), skip_norms_and_biases=True
        )
        optimizer = self.make_optimizer(groups)
        scale = self.lr_scale()
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * scale
        if self.hparams.scheduler == "constant":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        scheduler = CosineLRScheduler(
            optimizer,
            t_initial=max(1, total),
            lr_min=self.hparams.min_lr * scale,
            warmup_lr_init=self.hparams.warmup_lr * scale,
            warmup_t=int(self.hparams.warmup_epochs * steps_per_epoch),
            cycle_limit=1,
            t_in_epochs=False,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any = None) -> None:
        # timm schedulers are driven by the number of optimiser updates done so far.
        scheduler.step_update(num_updates=self.global_step)

    # -- checkpoints -----------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rsvit_rng_states"] = _rng_states()
        checkpoint["rsvit"] = {
            "backbone": str(self.hparams.backbone),
            "num_classes": int(self.hparams.num_classes),
            "in_chans": int(self.hparams.in_chans),
            "classes": list(self.class_names),
        }
        preprocessing = self.datamodule_preprocessing()
        if preprocessing is not None:
            checkpoint["rsvit"]["preprocessing"] = preprocessing

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rsvit_rng_states")
        if states is not None and self._trainer is not None:  # resuming, not load_from_checkpoint
            _set_rng_states(states)
