"""``DistillationTask``: a small student learns from a large frozen teacher.

For classification, segmentation and change detection.

The teacher is any model file rsvit writes (``load_model``); it stays frozen in eval mode and runs
without gradients. The student is any :class:`~rsvit.models.ModelSpec` of the same family and class
count. The training loss is a weighted mix of

* ``kl_weight``: soft targets, ``T^2 * KL(teacher_T || student_T)`` at ``temperature`` T;
* ``hard_weight``: cross-entropy against the teacher's arg-max (pseudo-labels);
* ``label_weight``: the ground-truth cross-entropy, when the batch carries labels (``label`` or
  ``mask``; unlabelled data simply drop this term);
* ``feature_weight``: the last ``feature_stages`` stage maps of the student, projected by 1x1 convs to
  the teacher's channels and resized to the teacher's grid, matched with MSE.

For segmentation and change detection every term is per pixel. Validation reports the agreement with
the teacher (arg-max equal, per image or per pixel) and, with labels, the accuracy of student and
teacher. With ``cache_dir`` the teacher logits are kept on disk by sample id and teacher digest (see
:mod:`rsvit.tasks.distillation_cache`); feature distillation always runs the teacher.

Teacher and student see the same normalised input, the DataModule's. The exported student is a normal
rsvit model file carrying the teacher's class names and family metadata (palette ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection, SumMetric

from rsvit.models.distillation import forward_with_features
from rsvit.models.spec import ModelSpec, build_model, load_model, task_spec
from rsvit.tasks.base import BaseTask, CommandLine, Evaluation
from rsvit.tasks.distillation_cache import TeacherCache, file_digest
from rsvit.tasks.distillation_losses import (
    FeatureProjector,
    feature_loss,
    hard_teacher_loss,
    resize_like,
    soft_kl_loss,
)
from rsvit.tasks.optim import weight_decay_groups
from rsvit.tasks.reports import RunReport
from rsvit.tasks.schedules import check_step_schedule, task_step_schedule

__all__ = [
    "ChangeDistillationTask",
    "ClassificationDistillationTask",
    "DistillationReport",
    "DistillationTask",
    "SegmentationDistillationTask",
]

_PROBE_SIZE = 64  # side of the input used once to read the stage channels of teacher and student


class DistillationReport(RunReport):
    """``metrics.json`` and ``model.safetensors`` of a distillation run; best = highest agreement."""

    def __init__(
        self,
        filename: str = "metrics.json",
        monitor: str = "agreement",
        export: str = "model.safetensors",
        plots: bool = False,
    ) -> None:
        super().__init__(filename, monitor, export, plots)


class DistillationTask(BaseTask):
    """Teacher -> student distillation (see the module docstring). Use the family subclasses.

    Args:
        teacher: model file written by rsvit (``model.safetensors`` of a run, ``rsvit export`` ...). Loaded
            when the task is built if the file exists, else when training starts.
        model: the student as a :class:`~rsvit.models.ModelSpec` dict of this family; ``num_classes`` and
            ``in_chans`` must match the teacher's.
        weights: starting weights of the student (any file ``rsvit.weights`` reads).
        temperature: softening of the KL term.
        kl_weight, hard_weight, label_weight, feature_weight: weights of the loss terms (0 = off).
        feature_stages: how many of the deepest stages are matched (student's last n with teacher's last n).
        ignore_index: label value without a loss (dense tasks).
        cache_dir: keep teacher logits there between epochs (deterministic training data only).
        optimizer: optimiser factory; default AdamW lr 1e-3, weight decay 0.05.
        scheduler, warmup_steps, min_lr: lr per optimiser step (:func:`rsvit.tasks.schedules.step_schedule`):
            linear warm-up over ``warmup_steps``, then ``"cosine"`` decay to ``min_lr`` at the end of the run
            or ``"constant"``. The default (constant, no warm-up) keeps the optimiser's lr throughout.
    """

    default_backbone = "resnet18"
    default_optimizer = ("AdamW", {"lr": 1e-3, "weight_decay": 0.05})
    progress_metric = "agreement"
    sync_eval_logs = True
    label_key: ClassVar[str] = "label"
    image_keys: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(
        self,
        teacher: str,
        model: dict[str, Any] | ModelSpec | None = None,
        weights: str | None = None,
        temperature: float = 4.0,
        kl_weight: float = 1.0,
        hard_weight: float = 0.0,
        label_weight: float = 0.0,
        feature_weight: float = 0.0,
        feature_stages: int = 1,
        ignore_index: int = 255,
        cache_dir: str | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: str = "constant",
        warmup_steps: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__()
        check_step_schedule(scheduler, warmup_steps, min_lr)
        if not self.family:
            raise TypeError(
                "use a family subclass: ClassificationDistillationTask, SegmentationDistillation..."
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if min(kl_weight, hard_weight, label_weight, feature_weight) < 0:
            raise ValueError("loss weights must not be negative")
        if kl_weight + hard_weight + label_weight + feature_weight == 0:
            raise ValueError(
                "every loss weight is 0: set kl_weight, hard_weight, label_weight or feature_weight"
            )
        if feature_weight and feature_stages < 1:
            raise ValueError(f"feature_stages must be at least 1, got {feature_stages}")
        self.spec = task_spec(model, self.family, self.default_backbone, type(self).__name__)
        self.save_hyperparameters(ignore=["optimizer", "model"])
        self.record_spec()
        self.set_optimizer(optimizer)
        self.model = build_model(self.spec)
        self.load_weights(weights)
        self.teacher: nn.Module | None = None  # not a submodule: kept out of checkpoints and the optimiser
        self.teacher_spec: ModelSpec | None = None
        self.teacher_metadata: Any = None
        self.teacher_digest = ""
        self.projector: FeatureProjector | None = None
        self.cache: TeacherCache | None = None
        self.class_names: list[str] = [str(i) for i in range(self.spec.num_classes)]
        for stage in ("val", "test"):
            counts = {
                k: SumMetric() for k in ("agree", "positions", "correct", "teacher_correct", "labelled")
            }
            setattr(self, f"{stage}_metrics", MetricCollection({**counts, "loss": MeanMetric()}))
        self.evaluation: dict[str, dict[str, Any]] = {}
        if Path(teacher).is_file():
            self._load_teacher()

    # -- teacher -------------------------------------------------------------------------------------

    def _load_teacher(self) -> None:
        path = Path(self.hparams.teacher)
        if not path.is_file():
            raise FileNotFoundError(
                f"teacher model file not found: {path}. Train one (rsvit fit --config ...; its run folder "
                "holds model.safetensors) and point model.init_args.teacher at it"
            )
        teacher, spec, metadata = load_model(path)
        if spec.task != self.family:
            raise ValueError(
                f"{type(self).__name__} needs a {self.family} teacher, {path} is a {spec.task} model"
            )
        for name in ("num_classes", "in_chans"):
            if getattr(spec, name) != getattr(self.spec, name):
                raise ValueError(
                    f"teacher has {name}={getattr(spec, name)}, the student {getattr(self.spec, name)}: set "
                    f"model.init_args.model.{name}: {getattr(spec, name)}"
                )
        teacher.requires_grad_(False)
        # a plain attribute, not a submodule: out of checkpoints, the optimiser and the student's export
        object.__setattr__(self, "teacher", teacher.eval())
        self.teacher_spec, self.teacher_metadata = spec, metadata
        self.teacher_digest = file_digest(path)
        if metadata.classes:
            self.class_names = list(metadata.classes)
        if self.hparams.feature_weight:
            self.projector = self._make_projector()
        if self.hparams.cache_dir:
            self.cache = TeacherCache(self.hparams.cache_dir, self.teacher_digest)

    def _probe(self) -> tuple[Tensor, ...]:
        x = torch.zeros(1, self.spec.in_chans, _PROBE_SIZE, _PROBE_SIZE)
        return tuple(x for _ in self.image_keys)

    def _make_projector(self) -> FeatureProjector:
        n = int(self.hparams.feature_stages)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            _, student = forward_with_features(self.model, *self._probe())
            _, teacher = forward_with_features(self.teacher, *self._probe())
        self.model.train(was_training)
        if n > min(len(student), len(teacher)):
            raise ValueError(
                f"feature_stages={n}, but the student has {len(student)} stages and the teacher "
                f"{len(teacher)}"
            )
        return FeatureProjector([t.shape[1] for t in student[-n:]], [t.shape[1] for t in teacher[-n:]])

    def setup(self, stage: str) -> None:
        if self.teacher is None:
            self._load_teacher()

    def on_fit_start(self) -> None:
        self.teacher.to(self.device)

    def on_validation_start(self) -> None:
        self.teacher.to(self.device)

    def on_test_start(self) -> None:
        self.teacher.to(self.device)

    def train(self, mode: bool = True) -> DistillationTask:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: batch norm statistics and dropout stay in inference mode
        return self

    # -- forward and losses ---------------------------------------------------------------------------

    def inputs_of(self, batch: dict[str, Any]) -> tuple[Tensor, ...]:
        return tuple(batch[k] for k in self.image_keys)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(*inputs)

    @staticmethod
    def sample_ids(batch: dict[str, Any]) -> list[str] | None:
        ids = batch.get("id", batch.get("path"))
        return [str(i) for i in ids] if ids is not None else None

    def teacher_outputs(self, batch: dict[str, Any], features: bool) -> tuple[Tensor, list[Tensor]]:
        """Teacher logits (from the cache when possible) and, if asked, its stage maps."""
        inputs = self.inputs_of(batch)
        ids = self.sample_ids(batch) if self.cache is not None and not features else None
        if ids is not None:
            cached = self.cache.get(ids, self.device)
            if cached is not None:
                return cached, []
        with torch.no_grad():
            if features:
                logits, maps = forward_with_features(self.teacher, *inputs)
            else:
                logits, maps = self.teacher(*inputs), []
        if ids is not None:
            self.cache.put(ids, logits)
        return logits, maps

    def distillation_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The weighted loss terms of a batch and their sum (``"loss"``)."""
        hp = self.hparams
        features = bool(hp.feature_weight)
        if features:
            student_logits, student_maps = forward_with_features(self.model, *self.inputs_of(batch))
        else:
            student_logits, student_maps = self.model(*self.inputs_of(batch)), []
        terms: dict[str, Tensor] = {}
        if hp.kl_weight or hp.hard_weight or features:  # a labels-only baseline never runs the teacher
            teacher_logits, teacher_maps = self.teacher_outputs(batch, features)
            teacher_logits = resize_like(teacher_logits, student_logits).float()
        if hp.kl_weight:
            terms["kl"] = soft_kl_loss(student_logits, teacher_logits, hp.temperature)
        if hp.hard_weight:
            terms["hard"] = hard_teacher_loss(student_logits, teacher_logits)
        labels = batch.get(self.label_key)
        if hp.label_weight and isinstance(labels, Tensor):
            terms["label"] = nn.functional.cross_entropy(
                student_logits.float(), labels.long(), ignore_index=hp.ignore_index
            )
        if features:
            n = int(hp.feature_stages)
            terms["feature"] = feature_loss(self.projector(student_maps[-n:]), teacher_maps[-n:])
        if not terms:
            raise ValueError(
                f"no loss term applies: the batch has no '{self.label_key}' labels and the teacher terms "
                "are off; set kl_weight, hard_weight or feature_weight"
            )
        weights = {
            "kl": hp.kl_weight,
            "hard": hp.hard_weight,
            "label": hp.label_weight,
            "feature": hp.feature_weight,
        }
        terms["loss"] = sum(weights[k] * v for k, v in terms.items())
        return terms

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> Tensor | None:
        if batch is None:
            return None
        terms = self.distillation_losses(batch)
        n = self.inputs_of(batch)[0].shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=n)
        return terms["loss"]

    # -- evaluation ----------------------------------------------------------------------------------

    def evaluation_step(self, batch: dict[str, Any] | None, stage: str) -> None:
        if batch is None:
            return
        inputs = self.inputs_of(batch)
        with torch.no_grad():
            teacher_logits = self.teacher(*inputs)
        student_logits = self.model(*inputs)
        teacher_logits = resize_like(teacher_logits, student_logits)
        student_pred, teacher_pred = student_logits.argmax(1), teacher_logits.argmax(1)
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        metrics["agree"].update((student_pred == teacher_pred).sum())
        metrics["positions"].update(student_pred.numel())
        metrics["loss"].update(
            soft_kl_loss(student_logits, teacher_logits, self.hparams.temperature), weight=inputs[0].shape[0]
        )
        labels = batch.get(self.label_key)
        if isinstance(labels, Tensor):
            valid = labels != self.hparams.ignore_index
            metrics["correct"].update(((student_pred == labels) & valid).sum())
            metrics["teacher_correct"].update(((teacher_pred == labels) & valid).sum())
            metrics["labelled"].update(valid.sum())

    def compute_evaluation(self, stage: str) -> Evaluation:
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        values = {name: float(m.compute()) if m.update_called else 0.0 for name, m in metrics.items()}
        metrics.reset()
        scalars = {
            "agreement": values["agree"] / max(values["positions"], 1.0),
            "loss": values["loss"],
        }
        if values["labelled"] > 0:
            scalars["accuracy"] = values["correct"] / values["labelled"]
            scalars["teacher_accuracy"] = values["teacher_correct"] / values["labelled"]
        return Evaluation(list(scalars.items()), dict(scalars))

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Any:
        return {"probs": self.model(*self.inputs_of(batch)).float().softmax(dim=1)}

    # -- optimisation and export ----------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        modules = nn.ModuleDict({"model": self.model})
        if self.projector is not None:
            modules["projector"] = self.projector
        optimizer = self.make_optimizer(weight_decay_groups(modules, (), skip_norms_and_biases=True))
        return task_step_schedule(self, optimizer)

    def default_preprocessing(self) -> dict[str, Any]:
        """The DataModule's preprocessing, else the teacher's (the student sees the same inputs)."""
        found = self.datamodule_preprocessing()
        if found:
            return found
        meta = self.teacher_metadata
        if meta is None:
            return {}
        return {"input_size": meta.input_size, "mean": meta.mean, "std": meta.std, "bands": None}

    def export_extra(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        inherited = dict(self.teacher_metadata.extra) if self.teacher_metadata is not None else {}
        for key in ("model_spec", "global_step"):
            inherited.pop(key, None)
        return {
            **inherited,
            "distilled_from": {
                "file": os.fspath(self.hparams.teacher),
                "sha256": self.teacher_digest,
                "spec": self.teacher_spec.to_dict() if self.teacher_spec is not None else None,
            },
        }

    @classmethod
    def command_line(cls) -> CommandLine:
        import lightning as L

        return CommandLine(datamodule=L.LightningDataModule, callbacks={"report": DistillationReport})


class ClassificationDistillationTask(DistillationTask):
    """Scene-classification distillation: per-image soft targets."""

    family = "classification"


class SegmentationDistillationTask(DistillationTask):
    """Segmentation distillation: per-pixel soft targets over ``mask`` labels."""

    family = "segmentation"
    label_key = "mask"


class ChangeDistillationTask(DistillationTask):
    """Change-detection distillation: per-pixel soft targets from the image pair."""

    family = "change"
    label_key = "mask"
    image_keys = ("image_a", "image_b")
