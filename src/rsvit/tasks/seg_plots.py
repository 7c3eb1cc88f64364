"""Deprecated: import from the two modules below.

:mod:`rsvit.tasks.segmentation` (``SegmentationReport``) and :mod:`rsvit.tasks.segmentation_predict`
(the prediction writer and PNGs).
"""

from __future__ import annotations

import warnings

from rsvit.tasks.segmentation import SegmentationReport
from rsvit.tasks.segmentation_predict import SegmentationPredictionWriter, save_index_png, save_prediction_png

__all__ = ["SegmentationPredictionWriter", "SegmentationReport", "save_index_png", "save_prediction_png"]

warnings.warn(
    "rsvit.tasks.seg_plots moved: SegmentationReport to rsvit.tasks.segmentation, the prediction writer "
    "and PNGs to rsvit.tasks.segmentation_predict",
    DeprecationWarning,
    stacklevel=2,
)
