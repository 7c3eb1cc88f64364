"""IoU between two :class:`~rsvit.structures.RotatedBoxes` sets, and the old home of the box type.

The rotated-box type, its angle conventions and conversions moved to :mod:`rsvit.structures.rotated_boxes`
(``rsvit.ops`` still re-exports them). Importing them from here keeps working but warns.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor

from rsvit.ops.rotated_iou import box_iou_rotated
from rsvit.structures import rotated_boxes as _moved
from rsvit.structures.rotated_boxes import RotatedBoxes

__all__ = ["pairwise_iou"]


def pairwise_iou(boxes1: RotatedBoxes, boxes2: RotatedBoxes) -> Tensor:
    """``(N, M)`` IoU between two :class:`RotatedBoxes` sets, see :func:`rsvit.ops.box_iou_rotated`."""
    return box_iou_rotated(boxes1.tensor, boxes2.tensor)


def __getattr__(name: str) -> Any:
    if name in _moved.__all__:
        warnings.warn(
            f"rsvit.ops.rotated_boxes.{name} moved to rsvit.structures.rotated_boxes.{name}; import it "
            "from there (or from rsvit.ops)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_moved, name)
    raise AttributeError(f"module 'rsvit.ops.rotated_boxes' has no attribute {name!r}")
