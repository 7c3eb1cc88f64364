"""Export of oriented detectors (Oriented R-CNN): one image in, its boxes, scores and labels out.

The detector returns a list of dicts; the exported graph returns ``boxes`` ``(D, 5)`` le90 in input
pixels, ``scores`` ``(D,)`` and ``labels`` ``(D,)`` for one image, ``D`` depending on the image.

* ``torch.export``: works. The rotated NMS is the custom op ``rsvit::batched_nms_rotated`` with a
  data-dependent output size, so loading such a program needs ``rsvit.ops`` imported (done by
  :func:`~rsvit.export.exported_program.load_program`). The anchor grids and proposal counts are
  computed from the traced feature sizes, so the graph takes one image of the traced size.
* ONNX: refused with an :class:`~rsvit.export.errors.ExportError` naming the operator. ONNX has no
  rotated NMS (its ``NonMaxSuppression`` is for axis-aligned boxes), so the graph would need an ONNX
  Runtime custom operator, which rsvit does not ship.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from rsvit.export.errors import ExportError
from rsvit.export.metadata import METADATA_KEY, ExportMetadata
from rsvit.export.tracing import capture_failure, example_inputs, model_name
from rsvit.utils.atomic import atomic_path

__all__ = [
    "STATIC_REASON",
    "DetectionGraph",
    "capture_detector",
    "custom_operators",
    "export_detection_onnx",
    "export_detection_program",
]

STATIC_REASON = (
    "the detector's anchor grids and proposal counts are computed from the traced feature sizes, "
    "and its per-image loop fixes the batch at one image"
)

# operator namespaces the ONNX exporter has translations for; anything else is a custom operator
_BUILTIN_NAMESPACES = frozenset({"aten", "prims", "_operator", "builtins", "math", "higher_order"})


class DetectionGraph(nn.Module):
    """The detector with tensor outputs for one image: ``(boxes, scores, labels)``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        (found,) = self.detector(image)
        return found["boxes"], found["scores"], found["labels"]


def capture_detector(model: nn.Module, metadata: ExportMetadata) -> torch.export.ExportedProgram:
    """``torch.export`` of :class:`DetectionGraph` at one image of the metadata's window."""
    inputs = example_inputs(metadata.spec, metadata.window, batch=1)
    try:
        with torch.no_grad():
            return torch.export.export(DetectionGraph(model.eval()), inputs)
    except Exception as err:
        raise capture_failure(metadata.spec, err) from err


def custom_operators(program: torch.export.ExportedProgram) -> list[str]:
    """Operators of the program outside PyTorch's own namespaces (``namespace::name``), sorted."""
    found = set()
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        schema = getattr(node.target, "_schema", None)
        if schema is None:
            continue
        namespace, _, name = schema.name.partition("::")
        if namespace not in _BUILTIN_NAMESPACES:
            found.add(f"{namespace}::{name}")
    return sorted(found)


def _written(metadata: ExportMetadata, exporter: str) -> ExportMetadata:
    return metadata.with_changes(
        exporter=exporter,
        dynamic_batch=False,
        dynamic_spatial=False,
        static_reason=STATIC_REASON,
        size_multiple=None,
    )


def export_detection_program(
    model: nn.Module, metadata: ExportMetadata, out: str | os.PathLike[str], *, overwrite: bool = False
) -> ExportMetadata:
    """Saves the detector as a ``torch.export`` archive with ``metadata``; returns the metadata written."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    program = capture_detector(model, metadata)
    written = _written(metadata, "torch.export")
    with atomic_path(out, suffix=".pt2") as tmp:
        torch.export.save(program, tmp, extra_files={f"{METADATA_KEY}.json": written.to_json()})
    return written


def export_detection_onnx(
    model: nn.Module,
    metadata: ExportMetadata,
    out: str | os.PathLike[str],
    *,
    opset: int,
    overwrite: bool = False,
) -> ExportMetadata:
    """ONNX export of a detector; raises :class:`ExportError` naming the custom operators it would need.

    The check runs on the captured program, so the refusal names every operator ONNX lacks rather than
    the first one the exporter happens to reach.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    program = capture_detector(model, metadata)
    missing = custom_operators(program)
    if missing:
        raise ExportError(
            f"model {model_name(metadata.spec)} cannot be exported to ONNX: unsupported operator "
            f"{', '.join(missing)} (custom operators without an ONNX translation; the detector's rotated NMS "
            "keeps a data-dependent number of boxes, and ONNX's NonMaxSuppression only handles axis-aligned "
            "boxes). Export it with --format exported-program, which predict-raster runs like an ONNX file"
        )
    from rsvit.export.onnx import save_program_as_onnx

    written = _written(metadata, "dynamo")
    with atomic_path(out, suffix=".onnx") as tmp:
        save_program_as_onnx(program, written, tmp, opset)
    return written
