"""Oriented R-CNN in rsvit's registries.

``ModelSpec(task="detection", backbone="resnet50", num_classes=15)`` builds it, and ``rsvit.weights``
converts official files with the families ``"orcn"`` (OBBDetection / RSP checkpoints) and
``"orcn_mmrotate"`` (mmrotate le90 checkpoints). ``"orcn"`` also reorders the classifier of 15-class
(DOTA-v1.0) checkpoints from BboxToolkit's class order to rsvit's (the DOTA devkit's, which mmrotate
uses too), so label ``i`` is ``DOTA_V1_0_CLASSES[i]``.

``head_kwargs`` are further arguments of :func:`~rsvit.models.detection.detector.build_oriented_rcnn`
(``fpn_channels``, ``fc_channels``, ``pipeline``, ``frozen_stages``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from torch import Tensor, nn

from rsvit.models.detection.convert import BBOXTOOLKIT_DOTA1_0_CLASSES, convert_official_orcn_state_dict
from rsvit.models.detection.detector import OrientedRCNN, build_oriented_rcnn
from rsvit.models.registry import register_task_model
from rsvit.structures.class_names import DOTA_V1_0_CLASSES
from rsvit.weights.convert import register_converter

if TYPE_CHECKING:
    from rsvit.models.spec import ModelSpec

__all__ = ["build_oriented_rcnn_from_spec"]


@register_task_model("detection", "oriented_rcnn", default=True)
def build_oriented_rcnn_from_spec(spec: ModelSpec) -> OrientedRCNN:
    """The detector a spec describes (untrained; weights come from the model file)."""
    backbone_kwargs = dict(spec.backbone_kwargs)
    if spec.in_chans != 3:
        backbone_kwargs["in_chans"] = spec.in_chans
    return build_oriented_rcnn(
        spec.backbone, num_classes=spec.num_classes, backbone_kwargs=backbone_kwargs, **spec.head_kwargs
    )


@register_converter("orcn")
def _convert_obbdetection(state_dict: Mapping[str, Tensor], model: nn.Module | None) -> dict[str, Tensor]:
    fc_cls = state_dict.get(
        "roi_head.bbox_head.fc_cls.weight", state_dict.get("module.roi_head.bbox_head.fc_cls.weight")
    )
    dota = fc_cls is not None and fc_cls.shape[0] == len(DOTA_V1_0_CLASSES) + 1
    return convert_official_orcn_state_dict(
        state_dict,
        model,
        source="obbdetection",
        source_classes=BBOXTOOLKIT_DOTA1_0_CLASSES if dota else None,
        classes=DOTA_V1_0_CLASSES if dota else None,
    )


@register_converter("orcn_mmrotate")
def _convert_mmrotate(state_dict: Mapping[str, Tensor], model: nn.Module | None) -> dict[str, Tensor]:
    return convert_official_orcn_state_dict(state_dict, model, source="le90")
