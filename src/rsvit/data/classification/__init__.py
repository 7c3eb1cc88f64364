"""Scene classification data.

Image datasets (folders, label files, Million-AID), the RSP training transform with Mixup/CutMix, and
stratified split files.

Names load on first use, so importing the package stays cheap.
"""

from rsvit.utils.lazy import lazy_exports

_EXPORTS = {
    "IMAGE_SUFFIXES": "rsvit.data.classification.datasets",
    "FolderSceneDataset": "rsvit.data.classification.datasets",
    "LabelFileError": "rsvit.data.classification.datasets",
    "LabelFileSceneDataset": "rsvit.data.classification.datasets",
    "MillionAIDDataset": "rsvit.data.classification.datasets",
    "SceneDataset": "rsvit.data.classification.datasets",
    "SceneRecord": "rsvit.data.classification.datasets",
    "collate_skip_none": "rsvit.data.classification.datasets",
    "find_images": "rsvit.data.classification.datasets",
    "read_label_file": "rsvit.data.classification.datasets",
    "RSP_AUTO_AUGMENT": "rsvit.data.classification.transforms",
    "SceneTransform": "rsvit.data.classification.transforms",
    "build_mixup": "rsvit.data.classification.transforms",
    "PROTOCOLS": "rsvit.data.classification.splits",
    "Protocol": "rsvit.data.classification.splits",
    "SplitFiles": "rsvit.data.classification.splits",
    "add_split_arguments": "rsvit.data.classification.splits",
    "run_split": "rsvit.data.classification.splits",
    "stratified_split": "rsvit.data.classification.splits",
    "write_label_file": "rsvit.data.classification.splits",
    "write_split": "rsvit.data.classification.splits",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
