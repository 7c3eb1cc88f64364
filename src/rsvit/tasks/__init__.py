"""Lightning tasks, all built on :class:`~rsvit.tasks.base.BaseTask`.

Scene classification and RSP pretraining, segmentation, change detection, dense regression.

Each comes with its reports; ``rsvit fit --config`` runs the one a config names.

Names are imported on first use, so ``import rsvit.tasks.<module>`` loads only what that module needs.
"""

from __future__ import annotations

from rsvit.utils.lazy import lazy_exports

_EXPORTS = {
    "ClassificationTask": "rsvit.tasks.classification",
    "MetricsReport": "rsvit.tasks.reports",
    "PredictionWriter": "rsvit.tasks.writers",
    "SegmentationTask": "rsvit.tasks.segmentation",
    "SegmentationReport": "rsvit.tasks.segmentation",
    "SegmentationPredictionWriter": "rsvit.tasks.segmentation_predict",
    "train_from_config": "rsvit.cli.lightning",
    "BaseTask": "rsvit.tasks.base",
    "ChangeDetectionTask": "rsvit.tasks.change",
    "ChangeReport": "rsvit.tasks.change",
    "DenseRegressionTask": "rsvit.tasks.regression",
    "HeightReport": "rsvit.tasks.regression",
    "ClassificationDistillationTask": "rsvit.tasks.distillation",
    "SegmentationDistillationTask": "rsvit.tasks.distillation",
    "ChangeDistillationTask": "rsvit.tasks.distillation",
    "DistillationReport": "rsvit.tasks.distillation",
    "PromptableEncoderDistillationTask": "rsvit.tasks.distillation_encoder",
    "DetectionTask": "rsvit.tasks.detection",
    "DetectionReport": "rsvit.tasks.detection",
    "DetectionPredictionWriter": "rsvit.tasks.detection",
    "PromptableTask": "rsvit.tasks.promptable",
    "PromptableReport": "rsvit.tasks.promptable",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
