"""Whole classification networks (backbone + pooling + linear head) for scene recognition.

The timm model of each backbone is used as is, so its head (``fc`` for ResNet, ``head`` for Swin and
ViTAEv2) keeps the key names of the official RSP and timm checkpoints. Weights come from any file
``rsvit.weights.load`` reads; when the file's classifier has another class count the head is
re-initialised to zeros, as RSP does when fine-tuning.
"""

from __future__ import annotations

import logging
import os

import timm
from torch import nn

from rsvit.models.backbones.factory import adapt_input_convs, resolve_backbone_name
from rsvit.models.backbones.fused_linear import fuse_linear_layers
from rsvit.models.registry import register_task_model
from rsvit.models.spec import ModelSpec

__all__ = ["build_classifier", "classifier_keys"]

log = logging.getLogger(__name__)


def classifier_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the model's final classifier (empty when it has none)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        return []
    ids = {id(p) for p in head.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def build_classifier(
    backbone: str,
    num_classes: int,
    in_chans: int = 3,
    drop_path_rate: float = 0.0,
    weights: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Builds ``backbone`` (short name or timm name) with a ``num_classes`` head.

    Args:
        backbone: e.g. ``"resnet50"``, ``"swin_t"``, ``"vitaev2_s"``, ``"resnet18"``.
        num_classes: classifier outputs.
        in_chans: input bands; 3-band weights are adapted to other counts like timm does.
        drop_path_rate: stochastic depth (RSP: Swin 0.1-0.2, ViTAEv2 0, ResNet none).
        weights: a checkpoint in any format ``rsvit.weights.load`` reads (RSP, timm, rsvit).

    Raises:
        rsvit.weights.WeightsError: the file does not fit the architecture beyond its classifier.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    name = resolve_backbone_name(backbone)
    kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    fuse_linear_layers(model)
    if weights is not None:
        _load_weights(model, weights, in_chans)
    return model


@register_task_model("classification", "linear", default=True)
def _classifier_from_spec(spec: ModelSpec) -> nn.Module:
    if spec.backbone.startswith("open_clip:"):  # a CLIP image tower (zero-/few-shot scene classifiers)
        from rsvit.models.clip.scene import build_clip_scene_classifier

        return build_clip_scene_classifier(spec)
    return build_classifier(spec.backbone, spec.num_classes, spec.in_chans, **spec.backbone_kwargs)


def _load_weights(model: nn.Module, path: str | os.PathLike[str], in_chans: int) -> None:
    from rsvit.weights import WeightsMismatchError, load

    result = load(path, model=model)
    state = adapt_input_convs(result.state_dict, model, in_chans)
    target = model.state_dict()
    head = set(classifier_keys(model))
    usable = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    not_loaded = [k for k in target if k not in usable]
    body_missing = [k for k in not_loaded if k not in head and not k.endswith("num_batches_tracked")]
    if body_missing:
        raise WeightsMismatchError(
            f"{path} does not fit {type(model).__name__} beyond its classifier: {len(body_missing)} entries "
            f"missing or of another shape, e.g. {body_missing[:5]}; {result.summary()}"
        )
    model.load_state_dict(usable, strict=False)
    replaced = [k for k in head if k not in usable]
    if replaced:
        # The file's head was made for other classes: start the new one from zeros (RSP fine-tuning).
        for key in replaced:
            nn.init.zeros_(model.get_parameter(key))
        log.info("%s: classifier %s re-initialised to zeros (class count differs)", path, replaced)
