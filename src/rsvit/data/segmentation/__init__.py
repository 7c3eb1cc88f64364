"""Semantic segmentation data.

Image + mask datasets, the official benchmark layouts (Potsdam, iSAID, Dubai) with their tiling tools,
and the joint image/mask transform.

Names load on first use, so importing the package stays cheap. Colours and figures moved to
:mod:`rsvit.viz`; their old names here still work with a deprecation warning.
"""

import importlib
import warnings
from typing import Any

from rsvit.utils.lazy import lazy_exports

_EXPORTS = {
    "IMAGE_SUFFIXES": "rsvit.data.segmentation.datasets",
    "MaskFormat": "rsvit.data.segmentation.datasets",
    "SegmentationDataset": "rsvit.data.segmentation.datasets",
    "SegmentationRecord": "rsvit.data.segmentation.datasets",
    "colours_to_index": "rsvit.data.segmentation.datasets",
    "pad_collate": "rsvit.data.segmentation.datasets",
    "pair_folders": "rsvit.data.segmentation.datasets",
    "read_file_list": "rsvit.data.segmentation.datasets",
    "read_mask": "rsvit.data.segmentation.datasets",
    "DUBAI_CLASSES": "rsvit.data.segmentation.benchmarks",
    "DUBAI_IGNORE_COLOURS": "rsvit.data.segmentation.benchmarks",
    "DUBAI_PALETTE": "rsvit.data.segmentation.benchmarks",
    "ISAID_CLASSES": "rsvit.data.segmentation.benchmarks",
    "ISAID_MASK_SUFFIX": "rsvit.data.segmentation.benchmarks",
    "ISAID_PALETTE": "rsvit.data.segmentation.benchmarks",
    "ISAID_SKIP": "rsvit.data.segmentation.benchmarks",
    "POTSDAM_CLASSES": "rsvit.data.segmentation.benchmarks",
    "POTSDAM_CLUTTER": "rsvit.data.segmentation.benchmarks",
    "POTSDAM_PALETTE": "rsvit.data.segmentation.benchmarks",
    "POTSDAM_TRAIN_TILES": "rsvit.data.segmentation.benchmarks",
    "POTSDAM_VAL_TILES": "rsvit.data.segmentation.benchmarks",
    "DubaiDataset": "rsvit.data.segmentation.benchmarks",
    "ISAIDDataset": "rsvit.data.segmentation.benchmarks",
    "PotsdamDataset": "rsvit.data.segmentation.benchmarks",
    "dubai_records": "rsvit.data.segmentation.benchmarks",
    "tile_isaid": "rsvit.data.segmentation.tiling",
    "tile_potsdam": "rsvit.data.segmentation.tiling",
    "write_tiles": "rsvit.data.segmentation.tiling",
    "IMAGENET_MEAN": "rsvit.data.segmentation.transforms",
    "IMAGENET_STD": "rsvit.data.segmentation.transforms",
    "SegmentationTransform": "rsvit.data.segmentation.transforms",
    "photometric_distortion": "rsvit.data.segmentation.transforms",
}

# Names this path (then a module) used to define, now in rsvit.viz.
MOVED_NAMES = {
    "Colour": "rsvit.viz.palettes",
    "colorize": "rsvit.viz.palettes",
    "default_palette": "rsvit.viz.palettes",
    "parse_colour": "rsvit.viz.palettes",
    "display_image": "rsvit.viz.images",
    "segmentation_figure": "rsvit.viz.segmentation",
}

__all__ = sorted(_EXPORTS)
_lazy_getattr, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


def __getattr__(name: str) -> Any:
    module = MOVED_NAMES.get(name)
    if module is None:
        return _lazy_getattr(name)
    warnings.warn(
        f"{__name__}.{name} moved to {module}.{name}; import from there", DeprecationWarning, stacklevel=2
    )
    return getattr(importlib.import_module(module), name)
