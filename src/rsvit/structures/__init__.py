"""Data types that models, tasks and tools pass around: rotated boxes and their conventions.

Kernels that compute on these types (rotated IoU, NMS, RoIAlign, box coders) live in :mod:`rsvit.ops`;
this package imports nothing else of rsvit.
"""

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
    "RotatedBoxes",
    "convert_angle_convention",
    "hbox_to_obb",
    "obb_to_hbox",
    "obb_to_poly",
    "poly_area",
    "poly_to_hbox",
    "poly_to_obb",
    "regularize_obb",
]
