"""CLIP image tower + a classification head as an rsvit scene-classification model file.

A zero-shot or few-shot CLIP classifier is an ordinary scene classifier once its text side is folded
into a head on the normalised image embedding: the zero-shot classifier is a linear head whose rows are
``scale * class embedding`` (no bias), a linear probe is a fitted linear head, and the cache adapter is a
head holding the shots' features (:class:`~rsvit.models.clip.fewshot.CacheAdapterHead`). Registered as the
``classification`` heads ``clip_linear`` and ``clip_cache``, such a model saves with
:func:`rsvit.models.save_model` and comes back from the file alone with :func:`rsvit.models.load_model`
(``rsvit export`` reads it the same way). The open_clip vision settings travel in
``backbone_kwargs`` (``embed_dim``, ``vision_cfg``, ``quick_gelu``), so a file never depends on which
open_clip configs are registered where it is loaded; only the image tower is built, not the text tower.

The model takes images normalised with CLIP's mean and std (stored in the file's metadata) at any size
and resizes them to the tower's input size (bicubic, antialiased), which is what raster windows need.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rsvit.models.registry import register_task_model

__all__ = [
    "CLIP_CACHE_HEAD",
    "CLIP_LINEAR_HEAD",
    "ClipSceneClassifier",
    "build_vision_tower",
    "scene_metadata",
    "scene_spec",
    "vision_settings",
    "zero_shot_head",
]

CLIP_LINEAR_HEAD = "clip_linear"
CLIP_CACHE_HEAD = "clip_cache"


def vision_settings(architecture: str) -> dict[str, Any]:
    """``{embed_dim, vision_cfg, quick_gelu}`` of an open_clip architecture (registered configs too)."""
    import open_clip

    config = open_clip.get_model_config(architecture)
    if config is None:
        raise ValueError(f"open_clip has no config named {architecture!r}; register its JSON config first")
    return {
        "embed_dim": int(config["embed_dim"]),
        "vision_cfg": dict(config["vision_cfg"]),
        "quick_gelu": bool(config.get("quick_gelu", False)),
    }


def build_vision_tower(settings: dict[str, Any]) -> nn.Module:
    """The open_clip image tower of ``settings`` (see :func:`vision_settings`), randomly initialised."""
    from open_clip.model import _build_vision_tower

    unknown = set(settings) - {"embed_dim", "vision_cfg", "quick_gelu"}
    if unknown or "embed_dim" not in settings or "vision_cfg" not in settings:
        raise ValueError(
            "a CLIP scene model needs backbone_kwargs {embed_dim, vision_cfg, quick_gelu}; got "
            f"{sorted(settings)}"
        )
    return _build_vision_tower(
        int(settings["embed_dim"]), dict(settings["vision_cfg"]), bool(settings.get("quick_gelu", False))
    )


def _image_size(visual: nn.Module) -> tuple[int, int]:
    size = getattr(visual, "image_size", 224)
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ClipSceneClassifier(nn.Module):
    """``head(normalise(visual(resize(x))))``: class logits ``(N, C)`` for CLIP-normalised images."""

    def __init__(self, visual: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.head = head
        self.image_size = _image_size(visual)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings ``(N, D)`` in float32."""
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bicubic", antialias=True)
        return F.normalize(self.visual(images).float(), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def zero_shot_head(text_weights: torch.Tensor, logit_scale: float) -> nn.Linear:
    """The zero-shot classifier as a linear head: rows ``logit_scale * class embedding``, no bias."""
    head = nn.Linear(text_weights.shape[1], text_weights.shape[0], bias=True)
    with torch.no_grad():
        head.weight.copy_(logit_scale * text_weights.float())
        head.bias.zero_()
    return head


def scene_spec(architecture: str, num_classes: int, head: str = CLIP_LINEAR_HEAD, **head_kwargs: Any) -> Any:
    """The :class:`~rsvit.models.ModelSpec` of a CLIP scene classifier on ``architecture``'s image tower."""
    from rsvit.models.spec import ModelSpec

    return ModelSpec(
        task="classification",
        backbone=architecture,
        head=head,
        num_classes=num_classes,
        in_chans=3,
        head_kwargs=dict(head_kwargs),
        backbone_kwargs=vision_settings(architecture),
    )


def scene_metadata(
    preprocess: Any, image_size: tuple[int, int], classes: list[str], extra: dict[str, Any] | None = None
) -> Any:
    """Model-file metadata: CLIP's mean/std (0-1 units), the input size (also the raster window), classes."""
    from rsvit.weights import WeightsMetadata

    normalize = next(t for t in preprocess.transforms if type(t).__name__ == "Normalize")
    return WeightsMetadata(
        input_size=(3, *image_size),
        mean=tuple(float(v) for v in normalize.mean),
        std=tuple(float(v) for v in normalize.std),
        classes=tuple(classes),
        extra={"window": image_size[0], **(extra or {})},
    )


@register_task_model("classification", CLIP_LINEAR_HEAD)
def _clip_linear(spec: Any) -> nn.Module:
    visual = build_vision_tower(spec.backbone_kwargs)
    dim = int(spec.backbone_kwargs["embed_dim"])
    return ClipSceneClassifier(visual, nn.Linear(dim, spec.num_classes))


@register_task_model("classification", CLIP_CACHE_HEAD)
def _clip_cache(spec: Any) -> nn.Module:
    from rsvit.models.clip.fewshot import CacheAdapterHead

    visual = build_vision_tower(spec.backbone_kwargs)
    dim = int(spec.backbone_kwargs["embed_dim"])
    kwargs = dict(spec.head_kwargs)
    shots = int(kwargs.pop("shots", 1))
    return ClipSceneClassifier(visual, CacheAdapterHead.empty(spec.num_classes, dim, shots, **kwargs))
