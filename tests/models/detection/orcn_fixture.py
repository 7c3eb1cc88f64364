"""The tiny official Oriented R-CNN of ``fixtures/orcn_tiny_*``, rebuilt with rsvit modules."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from rsvit.models.backbones.vitaev2 import official_kwargs_to_ours
from rsvit.models.detection import OrientedRCNN, RCNNTestConfig, RPNTestConfig, build_oriented_rcnn
from rsvit.models.detection.convert import convert_official_orcn_state_dict

# Settings of the official config that only matter for training.
_TRAINING_ONLY = ("type", "frozen_stages", "norm_eval")


def official_tiny_state_dict(fixtures: Path) -> dict[str, torch.Tensor]:
    """Backbone (``vitaev2_tiny``) and heads as one official ``OrientedRCNN`` state dict."""
    state = {f"backbone.{k}": v for k, v in load_file(fixtures / "vitaev2_tiny.safetensors").items()}
    state.update(load_file(fixtures / "orcn_tiny_heads.safetensors"))
    return state


def build_tiny_orcn(fixtures: Path) -> tuple[OrientedRCNN, dict]:
    config = json.loads((fixtures / "orcn_tiny_config.json").read_text())
    mc, tc = config["model_config"], config["test_cfg"]
    backbone_kwargs = {k: v for k, v in mc["backbone"].items() if k not in _TRAINING_ONLY}
    rpn, rcnn = tc["rpn"], tc["rcnn"]
    model = build_oriented_rcnn(
        "vitaev2_s",
        num_classes=mc["roi_head"]["bbox_head"]["num_classes"],
        fpn_channels=mc["neck"]["out_channels"],
        fc_channels=mc["roi_head"]["bbox_head"]["fc_out_channels"],
        backbone_kwargs=official_kwargs_to_ours(backbone_kwargs),
        rpn_test_cfg=RPNTestConfig(rpn["nms_pre"], rpn["nms_post"], rpn["nms_thr"]),
        rcnn_test_cfg=RCNNTestConfig(rcnn["score_thr"], rcnn["nms"]["iou_thr"], rcnn["max_per_img"]),
    )
    state = convert_official_orcn_state_dict(official_tiny_state_dict(fixtures), model)
    model.load_state_dict(state, strict=True)
    return model.eval(), config


def negate_angle(boxes: torch.Tensor, column: int = 4) -> torch.Tensor:
    """OBBDetection <-> le90: the angle column changes sign, nothing else."""
    flip = torch.ones(boxes.shape[-1], dtype=boxes.dtype)
    flip[column] = -1
    return boxes * flip
