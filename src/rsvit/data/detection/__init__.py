"""Oriented object detection data: DOTA / HRSC2016 labels and the DOTA patch split / merge.

Names load on first use, so importing the package stays cheap.
"""

from rsvit.utils.lazy import lazy_exports

_EXPORTS = {
    "DOTA_CLASSES": "rsvit.data.detection.labels",
    "DOTA_V1_0_CLASSES": "rsvit.data.detection.labels",
    "DOTA_V1_5_CLASSES": "rsvit.data.detection.labels",
    "DOTA_V2_0_CLASSES": "rsvit.data.detection.labels",
    "HRSC2016_CLASSES": "rsvit.data.detection.labels",
    "IMAGE_SUFFIXES": "rsvit.data.detection.labels",
    "DotaDatasetError": "rsvit.data.detection.labels",
    "DotaLabelError": "rsvit.data.detection.labels",
    "DotaLabels": "rsvit.data.detection.labels",
    "HrscAnnotation": "rsvit.data.detection.labels",
    "LabelIssue": "rsvit.data.detection.labels",
    "concat_labels": "rsvit.data.detection.labels",
    "format_labels": "rsvit.data.detection.labels",
    "pair_images_and_labels": "rsvit.data.detection.labels",
    "parse_labels": "rsvit.data.detection.labels",
    "polygon_self_intersects": "rsvit.data.detection.labels",
    "read_hrsc2016_xml": "rsvit.data.detection.labels",
    "read_labels": "rsvit.data.detection.labels",
    "write_labels": "rsvit.data.detection.labels",
    "IMAGENET_MEAN": "rsvit.data.detection.datasets",
    "IMAGENET_STD": "rsvit.data.detection.datasets",
    "DotaDetectionDataset": "rsvit.data.detection.datasets",
    "detection_collate": "rsvit.data.detection.datasets",
    "read_hrsc_as_dota": "rsvit.data.detection.datasets",
    "rescaled_size": "rsvit.data.detection.datasets",
    "DetectionAugment": "rsvit.data.detection.transforms",
    "hflip": "rsvit.data.detection.transforms",
    "rot90": "rsvit.data.detection.transforms",
    "vflip": "rsvit.data.detection.transforms",
    "MergedDetections": "rsvit.data.detection.split",
    "Patch": "rsvit.data.detection.split",
    "SplitReport": "rsvit.data.detection.split",
    "merge_patch_detections": "rsvit.data.detection.split",
    "parse_patch_name": "rsvit.data.detection.split",
    "patch_name": "rsvit.data.detection.split",
    "split_dataset": "rsvit.data.detection.split",
    "split_image": "rsvit.data.detection.split",
    "window_origins": "rsvit.data.detection.split",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
