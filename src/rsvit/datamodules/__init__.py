"""Lightning DataModules, one per task family (imported on first use)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SceneDataModule": "rsvit.datamodules.scene",
    "SegmentationDataModule": "rsvit.datamodules.segmentation",
    "ChangeDataModule": "rsvit.datamodules.change",
    "HeightDataModule": "rsvit.datamodules.regression",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rsvit.datamodules' has no attribute {name!r}")
