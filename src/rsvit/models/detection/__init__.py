"""Oriented object detection: Oriented R-CNN (Xie et al., ICCV 2021) equal to the official code."""

from rsvit.models.detection.anchors import AnchorGenerator
from rsvit.models.detection.detector import OrientedRCNN, build_oriented_rcnn
from rsvit.models.detection.fpn import FPN
from rsvit.models.detection.freezing import FreezeConfig
from rsvit.models.detection.inputs import DetectionTargets
from rsvit.models.detection.registration import build_oriented_rcnn_from_spec
from rsvit.models.detection.roi_head import OrientedBBoxHead, RCNNTestConfig, RotatedRoIExtractor
from rsvit.models.detection.rpn import OrientedRPNHead, RPNTestConfig

__all__ = [
    "FPN",
    "AnchorGenerator",
    "DetectionTargets",
    "FreezeConfig",
    "OrientedBBoxHead",
    "OrientedRCNN",
    "OrientedRPNHead",
    "RCNNTestConfig",
    "RPNTestConfig",
    "RotatedRoIExtractor",
    "build_oriented_rcnn",
    "build_oriented_rcnn_from_spec",
]
