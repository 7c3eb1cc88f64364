"""``PromptableEncoderDistillationTask``: a small image encoder learns SAM's embeddings (MobileSAM recipe).

SAM's cost is its ViT image encoder; the prompt encoder and mask decoder are tiny. The decoupled recipe
of MobileSAM trains only a small encoder to reproduce the teacher's image embedding (MSE between the
``(B, C, S/16, S/16)`` maps, no mask loss), then reuses the teacher's prompt encoder and mask decoder
unchanged. Only images are needed, so the encoder can be fitted to the user's own imagery.

* ``teacher``: a promptable model file rsvit wrote (``save_model``) or an official ``segment-anything``
  checkpoint. It stays frozen in eval mode and only its image encoder runs.
* ``model``: the student, a promptable :class:`~rsvit.models.ModelSpec` (e.g. ``backbone: resnet18``,
  see :mod:`rsvit.models.promptable.backbone_encoder`) whose ``head_kwargs`` size the same decoder as
  the teacher's. The teacher's prompt encoder and mask decoder are copied into it and frozen; the
  optimiser sees the image encoder only.
* Input: SAM's frame. Each batch image (normalised by the DataModule with the teacher's mean and std,
  ``pixel_mean / 255``) is resized so that its long side is ``img_size`` and zero-padded to a square
  (zero is the mean colour after normalisation), as SAM's preprocessing does.
* ``cache_dir``: teacher embeddings kept as float16 safetensors by teacher-file digest and sample id
  (deterministic data only, such as :class:`~rsvit.datamodules.unlabelled.UnlabelledDataModule`).
* Validation: ``embedding_mse`` (and the teacher embedding's variance, for scale) and, with
  ``prompts_per_image`` > 0, the IoU of the student's prompted masks with the teacher's on seeded point
  prompts (best of three masks, as the raster commands answer a single point) and on box prompts (the box
  of the teacher's point mask). IoUs are measured on the low-resolution masks inside the unpadded image.

The exported ``model.safetensors`` is a complete promptable model (student encoder + teacher decoder)
that ``rsvit segment-raster`` and ``rsvit masks-raster`` load like any SAM.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from rsvit.models.promptable.backbone_encoder import BackboneImageEncoder
from rsvit.models.promptable.checkpoint import load_official_sam
from rsvit.models.promptable.sam import Sam, SamConfig
from rsvit.models.promptable.transforms import preprocess_shape
from rsvit.models.spec import ModelSpec, build_model, load_model, task_spec
from rsvit.tasks.base import BaseTask, CommandLine, Evaluation
from rsvit.tasks.distillation_cache import TeacherCache, file_digest
from rsvit.tasks.optim import weight_decay_groups
from rsvit.tasks.reports import RunReport
from rsvit.tasks.schedules import check_step_schedule, task_step_schedule
from rsvit.weights import CheckpointFormatError, WeightsMismatchError
from rsvit.weights.model_file import DESCRIPTION_KEY, read_header

__all__ = [
    "EmbeddingCache",
    "EncoderDistillationReport",
    "PromptableEncoderDistillationTask",
    "load_sam_teacher",
    "sam_input",
]

# Sizes the student's decoder must share with the teacher's so the copied weights mean the same.
_DECODER_FIELDS = tuple(
    f.name
    for f in fields(SamConfig)
    if not f.name.startswith("encoder_") and f.name not in ("pixel_mean", "pixel_std", "in_chans")
)


def load_sam_teacher(path: str | os.PathLike[str]) -> tuple[Sam, ModelSpec | None]:
    """The SAM a teacher file holds: an rsvit promptable model file, else an official checkpoint.

    Returns the model (eval mode) and its spec (``None`` for an official checkpoint).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a model file of another task, or a file that is no SAM checkpoint either.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"teacher not found: {path}. Give a promptable model file (rsvit.models.save_model) or an "
            "official segment-anything checkpoint (sam_vit_b_01ec64.pth ...) as model.init_args.teacher"
        )
    try:
        described = DESCRIPTION_KEY in read_header(path).metadata
    except CheckpointFormatError:
        described = False  # not safetensors: an official .pth, or nothing usable
    if described:
        model, spec, _ = load_model(path)
        if spec.task != "promptable" or not isinstance(model, Sam):
            raise ValueError(
                f"teacher {path} is a {spec.task!r} model ({spec.backbone}); encoder distillation needs a "
                "promptable (SAM) teacher"
            )
        return model.eval(), spec
    try:
        return load_official_sam(path).eval(), None
    except (CheckpointFormatError, WeightsMismatchError) as exc:
        raise ValueError(
            f"teacher {path} is neither an rsvit promptable model file nor an official SAM checkpoint: {exc}"
        ) from exc


def sam_input(images: Tensor, img_size: int) -> tuple[Tensor, tuple[int, int]]:
    """Normalised ``(B, C, H, W)`` images in SAM's frame: long side resized to ``img_size``, padded square.

    Returns the ``(B, C, S, S)`` input and the ``(h, w)`` of the image inside it.
    """
    height, width = images.shape[-2:]
    h, w = preprocess_shape(int(height), int(width), img_size)
    if (h, w) != (height, width):
        images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return F.pad(images, (0, img_size - w, 0, img_size - h)), (h, w)


class EmbeddingCache(TeacherCache):
    """Teacher embeddings by sample id, stored as float16 (a ViT-B embedding is 2 MiB so, 4 in float32)."""

    def __init__(self, folder: str | os.PathLike[str], teacher_digest: str) -> None:
        super().__init__(folder, teacher_digest, dtype=torch.float16)


class EncoderDistillationReport(RunReport):
    """``metrics.json`` and ``model.safetensors`` of an encoder distillation.

    A monitor named ``*mse`` ranks lower-is-better, others (``mask_iou`` ...) higher-is-better.
    """

    def __init__(
        self,
        filename: str = "metrics.json",
        monitor: str = "embedding_mse",
        export: str = "model.safetensors",
        plots: bool = False,
    ) -> None:
        super().__init__(filename, monitor, export, plots)

    def score(self, entry: dict[str, Any]) -> float | None:
        value = super().score(entry)
        return -value if value is not None and self.monitor.endswith("mse") else value


def _box_of(mask: Tensor) -> Tensor | None:
    """``x0, y0, x1, y1`` (pixel edges) of a boolean ``(h, w)`` mask; ``None`` when empty."""
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    if rows.numel() == 0:
        return None
    return torch.stack([cols[0, 0], rows[0, 0], cols[-1, 0] + 1, rows[-1, 0] + 1]).float()


def _iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boolean masks over the last two axes; 1 where both are empty (they agree)."""
    inter = (a & b).sum((-2, -1)).float()
    union = (a | b).sum((-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _embedding_shape(encoder: nn.Module, probe: Tensor) -> tuple[int, ...]:
    """Output shape of ``encoder`` on ``probe``, in eval mode so that batch-norm statistics stay unchanged."""
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        shape = tuple(encoder(probe).shape)
    encoder.train(was_training)
    return shape


class PromptableEncoderDistillationTask(BaseTask):
    """SAM image-encoder distillation (see the module docstring).

    Args:
        teacher: promptable model file or official SAM checkpoint. Loaded when the task is built if the
            file exists, else when training starts.
        model: the student as a promptable :class:`~rsvit.models.ModelSpec` dict (default backbone
            ``resnet18``); its ``head_kwargs`` must size the teacher's decoder (``img_size``,
            ``prompt_embed_dim`` ...).
        weights: starting weights of the whole student (any file ``rsvit.weights`` reads).
        backbone_weights: starting weights of the student's backbone alone (ImageNet, RSP ...), for an
            encoder built from an rsvit backbone.
        cache_dir: keep teacher embeddings there (float16) between epochs.
        prompts_per_image: point prompts per validation image for the mask IoU (0 = embedding MSE only);
            each point with a non-empty teacher mask also gives a box prompt.
        prompt_seed: seed of the validation prompts (the same points every validation).
        optimizer: optimiser factory; default AdamW lr 1e-3, weight decay 0.05.
        scheduler, warmup_steps, min_lr: lr per optimiser step (:func:`rsvit.tasks.schedules.step_schedule`):
            linear warm-up over ``warmup_steps``, then ``"cosine"`` decay to ``min_lr`` at the end of the run
            or ``"constant"``. The default (constant, no warm-up) keeps the optimiser's lr throughout.
    """

    family = "promptable"
    default_backbone = "resnet18"
    default_optimizer = ("AdamW", {"lr": 1e-3, "weight_decay": 0.05})
    progress_metric = "embedding_mse"
    sync_eval_logs = True

    def __init__(
        self,
        teacher: str,
        model: dict[str, Any] | ModelSpec | None = None,
        weights: str | None = None,
        backbone_weights: str | None = None,
        cache_dir: str | None = None,
        prompts_per_image: int = 4,
        prompt_seed: int = 0,
        optimizer: OptimizerCallable | None = None,
        scheduler: str = "constant",
        warmup_steps: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__()
        check_step_schedule(scheduler, warmup_steps, min_lr)
        if prompts_per_image < 0:
            raise ValueError(f"prompts_per_image must be 0 or more, got {prompts_per_image}")
        self.spec = task_spec(model, self.family, self.default_backbone, type(self).__name__)
        self.save_hyperparameters(ignore=["optimizer", "model"])
        self.record_spec()
        self.set_optimizer(optimizer)
        self.model: Sam = build_model(self.spec).train()  # SAM builders return eval-mode models
        self.load_weights(weights)
        if backbone_weights:
            self._load_backbone_weights(backbone_weights)
        self.teacher: Sam | None = None  # not a submodule: kept out of checkpoints and the optimiser
        self.teacher_spec: ModelSpec | None = None
        self.teacher_digest = ""
        self.cache: EmbeddingCache | None = None
        for stage in ("val", "test"):
            names = ("embedding_mse", "teacher_variance", "point_iou", "box_iou", "mask_iou")
            setattr(self, f"{stage}_metrics", MetricCollection({k: MeanMetric() for k in names}))
        self.evaluation: dict[str, dict[str, Any]] = {}
        if Path(teacher).is_file():
            self._load_teacher()

    def _load_backbone_weights(self, path: str) -> None:
        from rsvit.weights import load_into

        encoder = self.model.image_encoder
        if not isinstance(encoder, BackboneImageEncoder):
            raise ValueError(
                f"backbone_weights apply to an encoder built from an rsvit backbone; the student's "
                f"{self.spec.backbone!r} encoder takes whole-model weights (weights: ...)"
            )
        load_into(encoder.backbone, path)

    # -- teacher -------------------------------------------------------------------------------------

    def _load_teacher(self) -> None:
        path = Path(self.hparams.teacher)
        teacher, spec = load_sam_teacher(path)
        self._check_fit(teacher, path)
        teacher.requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)
        self.teacher_spec = spec
        self.teacher_digest = file_digest(path)
        # the student answers prompts with the teacher's own decoder, frozen
        for part in ("prompt_encoder", "mask_decoder"):
            getattr(self.model, part).load_state_dict(getattr(teacher, part).state_dict())
            getattr(self.model, part).requires_grad_(False)
        self.model.mask_threshold = teacher.mask_threshold
        if self.hparams.cache_dir:
            self.cache = EmbeddingCache(self.hparams.cache_dir, self.teacher_digest)

    def _check_fit(self, teacher: Sam, path: Path) -> None:
        """Student and teacher must share input size, bands, normalisation and decoder sizes."""
        student = self.model
        hint = "model.init_args.model.head_kwargs"
        if teacher.config is not None and student.config is not None:
            for name in _DECODER_FIELDS:
                t, s = getattr(teacher.config, name), getattr(student.config, name)
                if t != s:
                    raise ValueError(
                        f"the student's {name}={s} differs from the teacher's ({path}) {t}: "
                        f"set {hint}.{name}: {t}"
                    )
        elif teacher.img_size != student.img_size:
            raise ValueError(
                f"the student's img_size={student.img_size} differs from the teacher's {teacher.img_size}: "
                f"set {hint}.img_size: {teacher.img_size}"
            )
        if teacher.pixel_mean.shape != student.pixel_mean.shape:
            bands = teacher.pixel_mean.shape[0]
            raise ValueError(
                f"the teacher takes {bands} bands, the student {student.pixel_mean.shape[0]}: set "
                f"model.init_args.model.in_chans: {bands}"
            )
        for name in ("pixel_mean", "pixel_std"):
            if not torch.allclose(getattr(teacher, name), getattr(student, name)):
                values = [round(float(v), 4) for v in getattr(teacher, name).flatten()]
                raise ValueError(
                    f"the student's {name} differs from the teacher's: set {hint}.{name}: {values}"
                )
        probe = torch.zeros(1, student.pixel_mean.shape[0], student.img_size, student.img_size)
        t_shape, s_shape = (
            _embedding_shape(teacher.image_encoder, probe),
            _embedding_shape(student.image_encoder, probe),
        )
        if t_shape != s_shape:
            raise ValueError(
                f"the student's embedding is {s_shape}, the teacher's {t_shape}; they must match"
            )

    def setup(self, stage: str) -> None:
        if self.teacher is None:
            self._load_teacher()
        self._check_normalisation()

    def _check_normalisation(self) -> None:
        found = self.datamodule_preprocessing()
        if not found or found.get("mean") is None:
            return
        for name in ("mean", "std"):
            expected = (getattr(self.teacher, f"pixel_{name}").flatten() / 255).tolist()
            given = list(found[name])
            if len(given) != len(expected) or any(
                abs(a - b) > 1e-3 for a, b in zip(given, expected, strict=False)
            ):
                raise ValueError(
                    f"the data are normalised with {name} {given}, the teacher expects "
                    f"{[round(v, 4) for v in expected]} (its pixel_{name} / 255): set data.init_args.{name}"
                )

    def train(self, mode: bool = True) -> PromptableEncoderDistillationTask:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # -- embeddings and loss --------------------------------------------------------------------------

    def forward(self, images: Tensor) -> Tensor:
        """Student embedding of normalised images (any size; put in SAM's frame first)."""
        return self.model.image_encoder(sam_input(images, self.model.img_size)[0])

    def teacher_embeddings(self, batch: dict[str, Any], x: Tensor) -> Tensor:
        """Teacher embeddings of the SAM-frame input ``x`` (from the cache when possible)."""
        ids = batch.get("id", batch.get("path")) if self.cache is not None else None
        keys = None
        if ids is not None:
            shape = "x".join(str(s) for s in batch["image"].shape[-2:])
            keys = [f"{i}@{shape}" for i in ids]
            cached = self.cache.get(keys, self.device)
            if cached is not None:
                return cached.float()
        if self.teacher.pixel_mean.device != x.device:  # no submodule, so Lightning does not move it
            self.teacher.to(x.device)
        with torch.no_grad():
            target = self.teacher.image_encoder(x).float()
        if keys is not None:
            self.cache.put(keys, target)
        return target

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> Tensor | None:
        if batch is None:
            return None
        x, _ = sam_input(batch["image"], self.model.img_size)
        target = self.teacher_embeddings(batch, x)
        loss = F.mse_loss(self.model.image_encoder(x).float(), target)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    # -- evaluation ----------------------------------------------------------------------------------

    def _decode(self, embedding: Tensor, multimask: bool, **prompts: Any) -> Tensor:
        """Boolean low-res masks ``(K, h4, w4)`` of prompts on one embedding (best of three if multimask)."""
        sam = self.model  # the teacher's decoder (copied), run on either embedding
        sparse, dense = sam.prompt_encoder(masks=None, **prompts)
        logits, iou = sam.mask_decoder(embedding, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask)
        best = logits[torch.arange(len(logits), device=logits.device), iou.argmax(1)]
        return best > sam.mask_threshold

    def _prompted_ious(
        self, student: Tensor, teacher: Tensor, size: tuple[int, int], seed: int
    ) -> tuple[Tensor, Tensor]:
        """IoUs of point prompts and of box prompts for one image (embeddings ``(1, C, g, g)``)."""
        h, w = size
        generator = torch.Generator().manual_seed(seed)
        n = int(self.hparams.prompts_per_image)
        coords = torch.rand(n, 1, 2, generator=generator) * torch.tensor([w, h])
        points = (coords.to(student.device), torch.ones(n, 1, dtype=torch.long, device=student.device))
        low_h, low_w = -(-h // 4), -(-w // 4)  # the unpadded part of the low-res (S/4) grid
        t_masks = self._decode(teacher, True, points=points)[:, :low_h, :low_w]
        s_masks = self._decode(student, True, points=points)[:, :low_h, :low_w]
        point_iou = _iou(s_masks, t_masks)
        boxes = [b for b in (_box_of(m) for m in t_masks) if b is not None]
        if not boxes:
            return point_iou, point_iou.new_zeros(0)
        box_prompts = (torch.stack(boxes) * 4).to(student.device)  # low-res pixels -> input pixels
        t_box = self._decode(teacher, False, boxes=box_prompts)[:, :low_h, :low_w]
        s_box = self._decode(student, False, boxes=box_prompts)[:, :low_h, :low_w]
        return point_iou, _iou(s_box, t_box)

    def evaluation_step(self, batch: dict[str, Any] | None, stage: str) -> None:
        if batch is None:
            return
        x, size = sam_input(batch["image"], self.model.img_size)
        target = self.teacher_embeddings(batch, x)
        with torch.no_grad():
            student = self.model.image_encoder(x).float()
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        n = x.shape[0]
        metrics["embedding_mse"].update(F.mse_loss(student, target), weight=n)
        metrics["teacher_variance"].update(target.var(dim=(1, 2, 3)).mean(), weight=n)
        if not self.hparams.prompts_per_image:
            return
        ids = batch.get("id", batch.get("path"))
        with torch.no_grad():
            for i in range(n):
                key = str(ids[i]) if ids is not None else f"{stage}:{i}"
                seed = zlib.crc32(key.encode()) ^ int(self.hparams.prompt_seed)
                point_iou, box_iou = self._prompted_ious(student[i : i + 1], target[i : i + 1], size, seed)
                metrics["point_iou"].update(point_iou)
                metrics["mask_iou"].update(point_iou)
                if box_iou.numel():
                    metrics["box_iou"].update(box_iou)
                    metrics["mask_iou"].update(box_iou)

    def compute_evaluation(self, stage: str) -> Evaluation:
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        scalars = {name: float(m.compute()) for name, m in metrics.items() if m.update_called}
        metrics.reset()
        return Evaluation(list(scalars.items()), dict(scalars))

    # -- optimisation and export ----------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        encoder = nn.ModuleDict({"image_encoder": self.model.image_encoder})
        optimizer = self.make_optimizer(weight_decay_groups(encoder, (), skip_norms_and_biases=True))
        return task_step_schedule(self, optimizer)

    def default_preprocessing(self) -> dict[str, Any]:
        """The DataModule's preprocessing, else SAM's input size and normalisation in [0, 1] units."""
        found = self.datamodule_preprocessing()
        if found:
            return found
        bands, size = self.model.pixel_mean.shape[0], self.model.img_size
        return {
            "input_size": [int(bands), int(size), int(size)],
            "mean": (self.model.pixel_mean.flatten() / 255).tolist(),
            "std": (self.model.pixel_std.flatten() / 255).tolist(),
            "bands": None,
        }

    def export_extra(self, preprocessing: dict[str, Any]) -> dict[str, Any]:
        return {
            "distilled_from": {
                "file": os.fspath(self.hparams.teacher),
                "sha256": self.teacher_digest,
                "spec": self.teacher_spec.to_dict() if self.teacher_spec is not None else "segment-anything",
                "parts": "image encoder distilled; prompt encoder and mask decoder copied from the teacher",
            }
        }

    @classmethod
    def command_line(cls) -> CommandLine:
        import lightning as L

        return CommandLine(datamodule=L.LightningDataModule, callbacks={"report": EncoderDistillationReport})
