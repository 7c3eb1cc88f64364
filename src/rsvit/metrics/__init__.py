"""Metrics that torchmetrics lacks: change-detection scores equal to the official evaluation, and
depth / height errors with and without per-image scale-and-shift alignment."""

from rsvit.metrics.change import (
    OFFICIAL_EPS,
    ChangeDetectionMetrics,
    ConfusionMatrixMeter,
    change_class_scores,
    confusion_matrix,
    confusion_matrix_scores,
    per_image_confusion_matrices,
)
from rsvit.metrics.regression import DepthMetrics, depth_metrics, least_squares_scale_shift

__all__ = [
    "OFFICIAL_EPS",
    "ChangeDetectionMetrics",
    "ConfusionMatrixMeter",
    "DepthMetrics",
    "change_class_scores",
    "confusion_matrix",
    "confusion_matrix_scores",
    "depth_metrics",
    "least_squares_scale_shift",
    "per_image_confusion_matrices",
]
