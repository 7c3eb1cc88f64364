"""rsvit's own backbones in timm's model registry.

So ``timm.create_model("vitaev2_s", features_only=True)`` works after ``import rsvit`` (and in
timm-based tools such as ``segmentation_models_pytorch``).

``import rsvit`` imports this module as soon as timm is imported (see :mod:`rsvit.utils.post_import`).
It imports timm only: each entry point imports its model code when a model is created, so registering
costs nothing and never re-enters a half-imported rsvit package.
"""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs, register_model
from torch import nn

__all__ = ["vitaev2_s"]


def _vitaev2_cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 51,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        # Every convolution that sees the image, so band adaptation reaches all of them.
        "first_conv": (
            *(f"stages.0.reduction.prm.convs.{i}" for i in range(4)),
            "stages.0.reduction.pcm.0",
        ),
        "classifier": "head",
        "license": "mit",
        **kwargs,
    }


# timm reads the pretrained configs of the entry points below from this module attribute.
default_cfgs = generate_default_cfgs({"vitaev2_s.rsp_millionaid": _vitaev2_cfg()})


@register_model
def vitaev2_s(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ViTAEv2-S (18.8 M parameters with a 51-class head), the RSP configuration."""
    from rsvit.models.backbones.vitaev2 import vitaev2_s as build

    return build(pretrained=pretrained, **kwargs)
