"""Old module paths of :mod:`rsvit.data` (the modules moved into one folder per task family).

A module that was split in two maps to its family package, which re-exports the public names of both
halves. :func:`rsvit.utils.moved.install` serves them with a deprecation warning.
"""

from __future__ import annotations

from rsvit.utils.moved import OldPathFinder
from rsvit.utils.moved import install as _install

__all__ = ["MOVED_MODULES", "OldPathFinder", "install"]

MOVED_MODULES: dict[str, str] = {
    "rsvit.data.image_io": "rsvit.data.io",
    "rsvit.data.scene": "rsvit.data.classification.datasets",
    "rsvit.data.transforms": "rsvit.data.classification.transforms",
    "rsvit.data.splits": "rsvit.data.classification.splits",
    "rsvit.data.seg_datasets": "rsvit.data.segmentation",  # split into benchmarks.py and tiling.py
    "rsvit.data.seg_transforms": "rsvit.data.segmentation.transforms",
    "rsvit.data.height": "rsvit.data.regression.datasets",
    "rsvit.data.dota": "rsvit.data.detection.labels",
    "rsvit.data.dota_split": "rsvit.data.detection.split",
    "rsvit.data.dota_eval": "rsvit.metrics.detection",
    "rsvit.data.dota_plot": "rsvit.viz.detection",
    "rsvit.data.change_plots": "rsvit.viz.change",
}


def install() -> OldPathFinder:
    """Serves the old paths of :data:`MOVED_MODULES` (once)."""
    return _install(MOVED_MODULES)
