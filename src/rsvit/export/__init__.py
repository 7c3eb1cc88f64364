"""Export of rsvit models to ONNX and ``torch.export`` archives, checked against eager PyTorch.

Dense models (classification, segmentation, change, height) export to one graph; detectors to one
graph per image (:mod:`rsvit.export.detection`; in ONNX it stops before the rotated NMS, which
:class:`OnnxRuntimeModel` applies); SAM to an encoder and a prompt-decoder graph
(:mod:`rsvit.export.promptable`, run as a pair by :mod:`rsvit.export.sam_runtime`). ``docs/export.md``
describes the files, metadata and runtimes.

>>> from rsvit.export import export_model, load_onnx_model               # doctest: +SKIP
>>> export_model("seg.safetensors", "seg.onnx", format="onnx")          # doctest: +SKIP
>>> model = load_onnx_model("seg.onnx"); logits = model(batch)          # doctest: +SKIP
"""

from rsvit.export.api import FORMATS, export_model
from rsvit.export.check import (
    Comparison,
    DetectionComparison,
    argmax_agreement,
    compare,
    compare_detections,
    compare_models,
    real_inputs,
)
from rsvit.export.errors import ExportError, MissingMetadataError
from rsvit.export.exported_program import ExportedProgramModel, export_program, load_program
from rsvit.export.metadata import ExportMetadata
from rsvit.export.onnx import export_onnx, read_onnx_metadata
from rsvit.export.quantize import quantize_int8, quantize_sam_int8
from rsvit.export.runtime import OnnxRuntimeModel, load_onnx_model
from rsvit.export.sam_runtime import ExportedSam, OnnxSam, ProgramSam, load_exported_sam, load_onnx_sam

__all__ = [
    "FORMATS",
    "Comparison",
    "DetectionComparison",
    "ExportError",
    "ExportMetadata",
    "ExportedProgramModel",
    "ExportedSam",
    "MissingMetadataError",
    "OnnxRuntimeModel",
    "OnnxSam",
    "ProgramSam",
    "argmax_agreement",
    "compare",
    "compare_detections",
    "compare_models",
    "export_model",
    "export_onnx",
    "export_program",
    "load_exported_sam",
    "load_onnx_model",
    "load_onnx_sam",
    "load_program",
    "quantize_int8",
    "quantize_sam_int8",
    "read_onnx_metadata",
    "real_inputs",
]
