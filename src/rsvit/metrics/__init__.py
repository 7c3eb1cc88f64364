"""Metrics that torchmetrics lacks, e.g. change-detection scores equal to the official evaluation."""

from rsvit.metrics.change import (
    OFFICIAL_EPS,
    ChangeDetectionMetrics,
    ConfusionMatrixMeter,
    change_class_scores,
    confusion_matrix,
    confusion_matrix_scores,
    per_image_confusion_matrices,
)

__all__ = [
    "OFFICIAL_EPS",
    "ChangeDetectionMetrics",
    "ConfusionMatrixMeter",
    "change_class_scores",
    "confusion_matrix",
    "confusion_matrix_scores",
    "per_image_confusion_matrices",
]
