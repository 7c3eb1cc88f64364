"""Export of oriented detectors (Oriented R-CNN), one image of the traced size per call.

The anchor grids and proposal counts are computed from the traced feature sizes, so both formats take
one image of the export window.

* ``torch.export`` (``.pt2``): the whole detector. The graph returns ``boxes`` ``(D, 5)`` le90 in input
  pixels, ``scores`` ``(D,)`` and ``labels`` ``(D,)``, ``D`` depending on the image. Its rotated NMS is
  the custom op ``rsvit::batched_nms_rotated``, so loading it needs ``rsvit.ops`` imported (done by
  :func:`~rsvit.export.exported_program.load_program`).
* ONNX: everything up to the last step. ONNX has no rotated NMS (its ``NonMaxSuppression`` is for
  axis-aligned boxes, which is what the RPN's proposal NMS uses, so that one stays in the graph). The
  graph returns every proposal's refined box ``boxes`` ``(K, 5)`` and its class probabilities
  ``class_scores`` ``(K, num_classes)``; the per-class selection (score threshold, rotated NMS, best
  ``max_per_img``) runs outside, with the settings stored in the metadata's ``selection``
  (:func:`~rsvit.models.detection.roi_head.select_detections`; :class:`~rsvit.export.runtime.OnnxRuntimeModel`
  applies it). Any other custom operator is refused with an
  :class:`~rsvit.export.errors.ExportError` naming it.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn

from rsvit.export.errors import ExportError
from rsvit.export.metadata import METADATA_KEY, ExportMetadata
from rsvit.export.tracing import capture_failure, example_inputs, model_name
from rsvit.ops.rotated_roi_align import tap_sums
from rsvit.utils.atomic import atomic_path

__all__ = [
    "ONNX_OUTPUTS",
    "STATIC_REASON",
    "DetectionCandidatesGraph",
    "DetectionGraph",
    "capture_detector",
    "custom_operators",
    "export_detection_onnx",
    "export_detection_program",
    "selection_settings",
]

STATIC_REASON = (
    "the detector's anchor grids and proposal counts are computed from the traced feature sizes, "
    "and its per-image loop fixes the batch at one image"
)

# operator namespaces the ONNX exporter has translations for; anything else is a custom operator
_BUILTIN_NAMESPACES = frozenset({"aten", "prims", "_operator", "builtins", "math", "higher_order"})
# custom operators with an ONNX translation (torchvision's NMS becomes ONNX NonMaxSuppression)
_ONNX_TRANSLATED = frozenset({"torchvision::nms"})
ONNX_OUTPUTS = ("boxes", "class_scores")
_SELECTION_FIELDS = ("score_thr", "nms_thr", "max_per_img", "min_side")


class DetectionGraph(nn.Module):
    """The detector with tensor outputs for one image: ``(boxes, scores, labels)``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        (found,) = self.detector(image)
        return found["boxes"], found["scores"], found["labels"]


class DetectionCandidatesGraph(nn.Module):
    """The detector before its per-class selection, for one image: ``(boxes, class_scores)``.

    Proposals (with their horizontal NMS), RoI features and the box head run as in the detector;
    :func:`~rsvit.models.detection.roi_head.select_detections` with the head's test settings turns the
    outputs into the detector's own.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        detector = self.detector
        feats = detector.extract_feat(image)
        ((proposals, _),) = detector.proposals(feats)
        logits, deltas = detector.roi_forward(feats, [proposals])
        return detector.bbox_head.scored_boxes(proposals, logits, deltas, tuple(image.shape[-2:]))


def capture_detector(
    model: nn.Module, metadata: ExportMetadata, graph: type[nn.Module] = DetectionGraph
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``graph`` (the whole detector by default) at one image of the window."""
    inputs = example_inputs(metadata.spec, metadata.window, batch=1)
    try:
        with torch.no_grad():
            return torch.export.export(graph(model.eval()), inputs)
    except Exception as err:
        raise capture_failure(metadata.spec, err) from err


def selection_settings(model: nn.Module) -> dict[str, float]:
    """The detector's per-class selection settings, as stored in the metadata's ``selection``."""
    settings = asdict(model.bbox_head.test_cfg)
    return {name: settings[name] for name in _SELECTION_FIELDS}


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
    """ONNX export of a detector up to its per-class selection (see the module docstring).

    Raises :class:`ExportError` naming every custom operator of the captured graph that has no ONNX
    translation, rather than the first one the converter happens to reach.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    with tap_sums():
        program = capture_detector(model, metadata, DetectionCandidatesGraph)
    missing = [name for name in custom_operators(program) if name not in _ONNX_TRANSLATED]
    if missing:
        raise ExportError(
            f"model {model_name(metadata.spec)} cannot be exported to ONNX: unsupported operator "
            f"{', '.join(missing)} (custom operators without an ONNX translation). Export it with "
            "--format exported-program, which predict-raster runs like an ONNX file"
        )
    from rsvit.export.onnx import save_program_as_onnx

    written = _written(metadata, "dynamo").with_changes(
        outputs=ONNX_OUTPUTS, selection=selection_settings(model)
    )
    with atomic_path(out, suffix=".onnx") as tmp:
        save_program_as_onnx(program, written, tmp, opset)
    return written
