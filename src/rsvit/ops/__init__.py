"""Rotated-box operations in pure PyTorch (CPU and CUDA, no compiled extensions).

Conventions shared by every op (details in :mod:`rsvit.structures.rotated_boxes`): pixel coordinates with
``y`` pointing down; rotated boxes are ``(cx, cy, w, h, angle)`` rows with the angle in radians,
turning the ``w`` side from +x towards +y; the default angle convention is ``le90``.
"""

from rsvit.ops.box_coders import DeltaXYWHACoder, MidpointOffsetCoder, parallelogram_to_obb
from rsvit.ops.rotated_boxes import pairwise_iou
from rsvit.ops.rotated_iou import box_iou_rotated, rotated_box_intersection
from rsvit.ops.rotated_nms import batched_nms_rotated, nms_rotated, rotated_overlap_pairs
from rsvit.ops.rotated_roi_align import RotatedRoIAlign, multilevel_rotated_roi_align, rotated_roi_align
from rsvit.structures.rotated_boxes import (
    ANGLE_CONVENTIONS,
    AngleConvention,
    RotatedBoxes,
    convert_angle_convention,
    hbox_to_obb,
    obb_to_hbox,
    obb_to_poly,
    poly_area,
    poly_to_hbox,
    poly_to_obb,
    regularize_obb,
)

__all__ = [
    "ANGLE_CONVENTIONS",
    "AngleConvention",
    "DeltaXYWHACoder",
    "MidpointOffsetCoder",
    "RotatedBoxes",
    "RotatedRoIAlign",
    "batched_nms_rotated",
    "box_iou_rotated",
    "convert_angle_convention",
    "hbox_to_obb",
    "multilevel_rotated_roi_align",
    "nms_rotated",
    "obb_to_hbox",
    "obb_to_poly",
    "pairwise_iou",
    "parallelogram_to_obb",
    "poly_area",
    "poly_to_hbox",
    "poly_to_obb",
    "regularize_obb",
    "rotated_box_intersection",
    "rotated_overlap_pairs",
    "rotated_roi_align",
]
