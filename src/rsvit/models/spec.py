"""Whole models from a small, serialisable description, so a weights file can rebuild its own network.

A :class:`ModelSpec` names the task, the backbone and the head. It is stored in the metadata of every
model rsvit saves (``save_model``), which lets ``load_model`` (and ``rsvit predict-raster``) rebuild
the network from the file alone. Which network a spec means is decided by the builder its model module
registered (:mod:`rsvit.models.registry`):

>>> spec = ModelSpec(task="segmentation", backbone="vitaev2_s", head="upernet", num_classes=6)
>>> model = build_model(spec)                                         # doctest: +SKIP
>>> save_model("seg.safetensors", model, spec, WeightsMetadata(classes=(...)))  # doctest: +SKIP
>>> model, spec, meta = load_model("seg.safetensors")                # doctest: +SKIP
"""

from __future__ import annotations

import operator
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsvit.errors import ModelSpecError
from rsvit.models.registry import model_builder, task_heads, task_names
from rsvit.weights import WeightsMetadata, load, read_metadata, save
from rsvit.weights.model_file import DESCRIPTION_KEY, read_description, read_header

__all__ = ["MAX_BANDS", "MAX_CLASSES", "ModelSpec", "build_model", "load_model", "save_model", "task_spec"]

#: Upper bounds of ``num_classes`` and ``in_chans``: far above any real model, far below sizes that
#: would exhaust memory (a classifier row per class, a stem filter per band).
MAX_CLASSES = 100_000
MAX_BANDS = 4096

_SPEC_KEY = DESCRIPTION_KEY


@dataclass
class ModelSpec:
    """What network to build.

    Args:
        task: a registered task family: ``classification``, ``segmentation``, ``change`` or ``regression``
            (depth / height), and whatever further families are registered.
        backbone: backbone name (see ``rsvit models``); for change detection also ``bit_resnet18``.
        head: a head registered for the task (default: the task's default head).
        num_classes: outputs of the head (regression: ignored, one channel).
        in_chans: input bands.
        head_kwargs: further arguments of the head builder (e.g. ``channels`` of UperNet).
        backbone_kwargs: further arguments of the backbone (e.g. ``drop_path_rate``).
    """

    task: str
    backbone: str
    head: str | None = None
    num_classes: int = 2
    in_chans: int = 3
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = _field_problems(self)
        if problems:
            raise ModelSpecError(f"invalid model spec: {'; '.join(problems)}")
        heads = task_heads(self.task)
        if not heads:
            raise ModelSpecError(f"unknown task {self.task!r}; choose one of {', '.join(task_names())}")
        if self.head is None:
            self.head = heads[0]
        model_builder(self.task, self.head)  # raises ModelSpecError when the head does not fit the task
        if self.num_classes < 1 or self.in_chans < 1:
            raise ModelSpecError(
                f"num_classes and in_chans must be positive, got {self.num_classes}, {self.in_chans}"
            )
        if self.num_classes > MAX_CLASSES or self.in_chans > MAX_BANDS:
            raise ModelSpecError(
                f"num_classes must be at most {MAX_CLASSES} and in_chans at most {MAX_BANDS}, "
                f"got {self.num_classes}, {self.in_chans}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        if not isinstance(data, dict):
            raise ModelSpecError(f"a model spec is a mapping of entries, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ModelSpecError(
                f"unknown model spec entries {sorted(map(str, unknown))}; "
                f"known: {sorted(cls.__dataclass_fields__)}"
            )
        missing = [name for name in ("task", "backbone") if name not in data]
        if missing:
            raise ModelSpecError(f"the model spec lacks the entries {missing}")
        return cls(**data)


def _field_problems(spec: ModelSpec) -> list[str]:
    """Type problems of the fields, checked before anything looks them up; integers are normalised."""
    problems = []
    for name in ("task", "backbone"):
        value = getattr(spec, name)
        if not isinstance(value, str) or not value:
            problems.append(f"{name} must be a non-empty string, got {value!r}")
    if spec.head is not None and (not isinstance(spec.head, str) or not spec.head):
        problems.append(f"head must be a non-empty string or null, got {spec.head!r}")
    for name in ("num_classes", "in_chans"):
        value = getattr(spec, name)
        try:
            if isinstance(value, bool):
                raise TypeError
            setattr(spec, name, operator.index(value))
        except TypeError:
            problems.append(f"{name} must be an integer, got {value!r}")
    for name in ("head_kwargs", "backbone_kwargs"):
        value = getattr(spec, name)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            problems.append(f"{name} must be a mapping of argument names to values, got {value!r}")
    return problems


def task_spec(
    model: ModelSpec | dict[str, Any] | None,
    task: str,
    default_backbone: str,
    owner: str,
    **overrides: Any,
) -> ModelSpec:
    """The spec a task model is built from.

    ``model`` (a spec, or a dict where ``task`` may be left out and
    the backbone defaults to ``default_backbone``), checked to be a ``task`` spec (``owner`` names the
    caller in the error), with the ``overrides`` that are not ``None`` applied (e.g. ``num_classes`` and
    ``in_chans`` linked from the data).
    """
    spec = (
        model
        if isinstance(model, ModelSpec)
        else ModelSpec.from_dict({"task": task, "backbone": default_backbone, **(model or {})})
    )
    if spec.task != task:
        raise ValueError(f"{owner} needs a {task} model spec, got task {spec.task!r}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return ModelSpec.from_dict({**spec.to_dict(), **changes}) if changes else spec


def build_model(spec: ModelSpec | dict[str, Any]) -> nn.Module:
    """Builds the (randomly initialised) network a spec describes, with the builder registered for it."""
    if isinstance(spec, dict):
        spec = ModelSpec.from_dict(spec)
    return model_builder(spec.task, spec.head)(spec)


def save_model(
    path: str | os.PathLike[str], model: nn.Module, spec: ModelSpec, metadata: WeightsMetadata | None = None
) -> None:
    """Writes the model's weights and its spec (plus preprocessing metadata) to safetensors, atomically."""
    metadata = metadata or WeightsMetadata()
    extra = {**metadata.extra, _SPEC_KEY: spec.to_dict()}
    fields = {k: v for k, v in asdict(metadata).items() if k != "extra"}
    fields["architecture"] = fields["architecture"] or f"{spec.task}/{spec.backbone}/{spec.head}"
    save(path, model.state_dict(), WeightsMetadata(**fields, extra=extra))


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, ModelSpec, WeightsMetadata]:
    """Rebuilds a model saved by :func:`save_model` and loads its weights strictly.

    The description in the file is not trusted: it is checked entry by entry and then against the
    shapes of the tensors stored beside it (on a model built without memory) before the real network
    is built, so a few hostile bytes cannot make the loader allocate terabytes or crash.

    Returns ``(model in eval mode, spec, WeightsMetadata)``.

    Raises:
        rsvit.weights.CheckpointFormatError: the file is not a readable safetensors file.
        rsvit.errors.ModelSpecError: the description is missing, malformed, invalid or does not fit
            the stored tensors; the message names the file and says what is wrong.
    """
    path = Path(path)
    header = read_header(path)
    spec = _spec_from_file(path, read_description(header))
    metadata = read_metadata(path)
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            skeleton = build_model(spec)
    except Exception as exc:  # whatever the builder rejects, the description is at fault
        raise ModelSpecError(
            f"{path}: its model description ({_describe(spec)}) cannot be built: {type(exc).__name__}: {exc}"
        ) from exc
    fit = load(path, model=skeleton)
    if not fit.ok:
        raise ModelSpecError(
            f"{path}: its model description ({_describe(spec)}) does not fit the tensors stored in the "
            f"file: {fit.summary(limit=3)}. Export the model again with rsvit.models.save_model"
        )
    model = build_model(spec)
    model.load_state_dict(fit.state_dict, strict=True)
    return model.eval(), spec, metadata


def _describe(spec: ModelSpec) -> str:
    return (
        f"{spec.task}/{spec.backbone}/{spec.head}, num_classes={spec.num_classes}, in_chans={spec.in_chans}"
    )


def _spec_from_file(path: Path, description: dict[str, Any]) -> ModelSpec:
    try:
        return ModelSpec.from_dict(description)
    except ModelSpecError as exc:
        raise ModelSpecError(f"{path}: invalid model description: {exc}") from exc
