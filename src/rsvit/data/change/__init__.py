"""Change detection data: bitemporal pair datasets, tile cropping and the joint augmentation.

Names load on first use, so importing the package stays cheap.
"""

from rsvit.utils.lazy import lazy_exports

_EXPORTS = {
    "IMAGE_SUFFIXES": "rsvit.data.change.datasets",
    "LAYOUTS": "rsvit.data.change.datasets",
    "ChangeDataError": "rsvit.data.change.datasets",
    "ChangeDetectionDataset": "rsvit.data.change.datasets",
    "ChangeLabelError": "rsvit.data.change.datasets",
    "MissingPartnerError": "rsvit.data.change.datasets",
    "crop_tiles": "rsvit.data.change.datasets",
    "detect_layout": "rsvit.data.change.datasets",
    "read_change_label": "rsvit.data.change.datasets",
    "read_list_file": "rsvit.data.change.datasets",
    "ChangeTransform": "rsvit.data.change.transforms",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
