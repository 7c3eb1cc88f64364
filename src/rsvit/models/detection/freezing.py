"""Frozen backbone stages and frozen BatchNorm statistics, as the official Oriented R-CNN configs set them.

The official configs train with the first stage(s) of the backbone fixed (``frozen_stages``) and, for
ResNet and ViTAEv2, every BatchNorm of the backbone in eval mode (``norm_eval``): with two images per
GPU the batch statistics would be too noisy to update. What one frozen stage covers follows the
official backbones:

| family  | official default           | ``frozen_stages = k`` freezes                    |
|---------|----------------------------|--------------------------------------------------|
| resnet  | 1, norm_eval True          | the stem (k >= 0) and ``layer1 .. layer{k}``     |
| vitaev2 | 1, norm_eval True          | stages ``0 .. k-1``                              |
| swin    | 2, norm_eval False         | the patch embedding (k >= 0) and stages ``0 .. k-2`` |

``-1`` freezes nothing. Frozen modules get ``requires_grad = False`` and stay in eval mode whenever
the detector is put in training mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["OFFICIAL_TRAINING", "FreezeConfig", "frozen_backbone_modules"]


@dataclass(frozen=True)
class FreezeConfig:
    """``frozen_stages`` (``-1``: none) and ``norm_eval`` (backbone BatchNorms always in eval mode)."""

    frozen_stages: int = -1
    norm_eval: bool = False


OFFICIAL_TRAINING = {
    "resnet": FreezeConfig(frozen_stages=1, norm_eval=True),
    "vitaev2": FreezeConfig(frozen_stages=1, norm_eval=True),
    "swin": FreezeConfig(frozen_stages=2, norm_eval=False),
}


def _children(model: nn.Module, names: list[str]) -> list[nn.Module]:
    missing = [n for n in names if not hasattr(model, n)]
    if missing:
        raise ValueError(f"cannot freeze {missing}: {type(model).__name__} has no such submodules")
    return [getattr(model, n) for n in names]


def frozen_backbone_modules(network: nn.Module, family: str | None, frozen_stages: int) -> list[nn.Module]:
    """The submodules of the backbone ``network`` that ``frozen_stages`` fixes (see the module table).

    Raises:
        ValueError: when stages should be frozen but the family is unknown or the network too shallow.
    """
    if frozen_stages < 0:
        return []
    if family == "resnet":
        stem = [n for n in ("conv1", "bn1") if hasattr(network, n)]
        return _children(network, [*stem, *(f"layer{i}" for i in range(1, frozen_stages + 1))])
    if family == "vitaev2":
        stages = getattr(network, "stages", None)
        if stages is None or frozen_stages > len(stages):
            raise ValueError(f"cannot freeze {frozen_stages} ViTAEv2 stages")
        return list(stages[:frozen_stages])
    if family == "swin":
        layers = getattr(network, "layers", None)
        if layers is None or max(frozen_stages - 1, 0) > len(layers):
            raise ValueError(f"cannot freeze {frozen_stages} Swin stages")
        return [*_children(network, ["patch_embed"]), *list(layers[: max(frozen_stages - 1, 0)])]
    raise ValueError(
        f"frozen_stages={frozen_stages} needs a known backbone family (resnet, vitaev2, swin), "
        f"got {family!r}; "
        "pass frozen_stages=-1"
    )
