"""CLIP image tower + a linear head as an rsvit scene-classification model file.

A zero-shot CLIP classifier is an ordinary scene classifier once its text side is folded into a linear
head on the normalised image embedding: rows ``scale * class embedding``, no bias. A linear probe is such
a head fitted to shots. As a :class:`~rsvit.models.ModelSpec` it is a ``classification`` model with the
default ``linear`` head on the backbone ``open_clip:<architecture>``, so it saves with
:func:`rsvit.models.save_model`, comes back from the file alone with :func:`rsvit.models.load_model` and
exports with ``rsvit export``. The open_clip vision settings travel in ``backbone_kwargs``
(``embed_dim``, ``vision_cfg``, ``quick_gelu``), so a file never depends on which open_clip configs are
registered where it is loaded; only the image tower is built, not the text tower.

The model takes images normalised with CLIP's mean and std (stored in the file's metadata) at any size
and resizes them to the tower's input size (bicubic, antialiased), which is what raster windows need.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CLIP_BACKBONE_PREFIX",
    "ClipSceneClassifier",
    "build_clip_scene_classifier",
    "build_vision_tower",
    "scene_metadata",
    "scene_spec",
    "vision_settings",
    "zero_shot_head",
]

#: ``ModelSpec.backbone`` of a CLIP scene classifier: this prefix, then the open_clip architecture name.
CLIP_BACKBONE_PREFIX = "open_clip:"


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


def scene_spec(architecture: str, num_classes: int) -> Any:
    """The :class:`~rsvit.models.ModelSpec` of a linear CLIP scene classifier on ``architecture``."""
    from rsvit.models.spec import ModelSpec

    return ModelSpec(
        task="classification",
        backbone=f"{CLIP_BACKBONE_PREFIX}{architecture}",
        head="linear",
        num_classes=num_classes,
        in_chans=3,
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


def build_clip_scene_classifier(spec: Any) -> nn.Module:
    """The network of a ``classification`` spec on an ``open_clip:`` backbone (see :func:`scene_spec`)."""
    if spec.in_chans != 3:
        raise ValueError(f"a CLIP image tower takes 3 bands (RGB), the spec asks for {spec.in_chans}")
    visual = build_vision_tower(spec.backbone_kwargs)
    return ClipSceneClassifier(visual, nn.Linear(int(spec.backbone_kwargs["embed_dim"]), spec.num_classes))
