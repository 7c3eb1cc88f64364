"""Data types that models, tasks and tools pass around: rotated boxes and their conventions.

Kernels that compute on these types (rotated IoU, NMS, RoIAlign, box coders) live in :mod:`rsvit.ops`;
this package imports nothing else of rsvit. Each module's public names are re-exported here.
"""

from rsvit.structures import rotated_boxes
from rsvit.structures.rotated_boxes import *  # noqa: F403

__all__ = [*rotated_boxes.__all__]
