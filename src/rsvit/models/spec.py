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

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from rsvit.models.registry import model_builder, task_heads, task_names
from rsvit.weights import WeightsMetadata, load_into, read_metadata, save

__all__ = ["ModelSpec", "build_model", "load_model", "save_model", "task_spec"]

_SPEC_KEY = "model_spec"


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
        heads = task_heads(self.task)
        if not heads:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(task_names())}")
        if self.head is None:
            self.head = heads[0]
        model_builder(self.task, self.head)  # raises when the head does not fit the task
        if self.num_classes < 1 or self.in_chans < 1:
            raise ValueError(
                f"num_classes and in_chans must be positive, got {self.num_classes}, {self.in_chans}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model spec entries {sorted(unknown)}")
        return cls(**data)


def task_spec(
    model: ModelSpec | dict[str, Any] | None,
    task: str,
    default_backbone: str,
    owner: str,
    **overrides: Any,
) -> ModelSpec:
    """The spec a task model is built from: ``model`` (a spec, or a dict where ``task`` may be left out and
    the backbone defaults to ``default_backbone``), checked to be a ``task`` spec (``owner`` names the
    caller in the error), with the ``overrides`` that are not ``None`` applied (e.g. ``num_classes`` and
    ``in_chans`` linked from the data)."""
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

    Returns ``(model in eval mode, spec, WeightsMetadata)``.
    """
    metadata = read_metadata(path)
    raw = metadata.extra.get(_SPEC_KEY)
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path} carries no model description ('{_SPEC_KEY}' metadata); it holds bare weights. Build "
            "the model yourself and use rsvit.weights.load_into, or save it with rsvit.models.save_model"
        )
    spec = ModelSpec.from_dict(raw)
    model = build_model(spec)
    load_into(model, path, strict=True)
    return model.eval(), spec, metadata
