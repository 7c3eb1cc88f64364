"""Lightning DataModules, one per task family (imported on first use)."""

from __future__ import annotations

from rsvit.utils.lazy import lazy_exports

_EXPORTS = {
    "SceneDataModule": "rsvit.datamodules.classification",
    "SegmentationDataModule": "rsvit.datamodules.segmentation",
    "ChangeDataModule": "rsvit.datamodules.change",
    "HeightDataModule": "rsvit.datamodules.regression",
    "UnlabelledDataModule": "rsvit.datamodules.unlabelled",
    "DetectionDataModule": "rsvit.datamodules.detection",
    "PromptableDataModule": "rsvit.datamodules.promptable",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
