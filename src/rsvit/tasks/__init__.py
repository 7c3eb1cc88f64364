"""Lightning tasks (scene classification and RSP pretraining, segmentation, change detection,
dense regression).

Each comes with its reports and command line.

Names are imported on first use, so ``import rsvit.tasks.<module>`` loads only what that module needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClassificationTask": "rsvit.tasks.classification",
    "MetricsReport": "rsvit.tasks.callbacks",
    "PredictionWriter": "rsvit.tasks.callbacks",
    "SegmentationTask": "rsvit.tasks.segmentation",
    "SegmentationReport": "rsvit.tasks.seg_plots",
    "SegmentationPredictionWriter": "rsvit.tasks.seg_plots",
    "train_from_config": "rsvit.tasks.seg_runner",
    "ChangeDetectionTask": "rsvit.tasks.change",
    "ChangeReport": "rsvit.tasks.change",
    "DenseRegressionTask": "rsvit.tasks.regression",
    "HeightReport": "rsvit.tasks.regression",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rsvit.tasks' has no attribute {name!r}")
