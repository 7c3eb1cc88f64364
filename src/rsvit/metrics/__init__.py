"""Metrics that torchmetrics lacks, one module per task family.

Change-detection scores equal to the official evaluation (:mod:`~rsvit.metrics.change`), depth /
height errors with and without per-image scale-and-shift alignment (:mod:`~rsvit.metrics.regression`),
prompted mIoU of promptable models (:mod:`~rsvit.metrics.promptable`) and DOTA mAP
(:mod:`~rsvit.metrics.detection`, not imported here: it needs shapely).

``rsvit.metrics.depth``, the old path of the regression metrics, still imports with a deprecation warning.
"""

from rsvit.metrics.change import (
    OFFICIAL_EPS,
    ChangeDetectionMetrics,
    ConfusionMatrixMeter,
    change_class_scores,
    confusion_matrix,
    confusion_matrix_scores,
    per_image_confusion_matrices,
)
from rsvit.metrics.promptable import PromptedIoU, mask_iou
from rsvit.metrics.regression import DepthMetrics, depth_metrics, least_squares_scale_shift
from rsvit.utils.moved import install as _install_old_paths

MOVED_MODULES = {"rsvit.metrics.depth": "rsvit.metrics.regression"}
_install_old_paths(MOVED_MODULES)

__all__ = [
    "OFFICIAL_EPS",
    "ChangeDetectionMetrics",
    "ConfusionMatrixMeter",
    "DepthMetrics",
    "PromptedIoU",
    "change_class_scores",
    "confusion_matrix",
    "confusion_matrix_scores",
    "depth_metrics",
    "least_squares_scale_shift",
    "mask_iou",
    "per_image_confusion_matrices",
]
