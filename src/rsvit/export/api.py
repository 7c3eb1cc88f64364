"""One call from a saved rsvit model file to an exported one."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from rsvit.export.errors import ExportError
from rsvit.export.exported_program import export_program
from rsvit.export.metadata import ExportMetadata
from rsvit.export.onnx import DEFAULT_OPSET, export_onnx

__all__ = ["DEFAULT_WINDOW", "FORMATS", "export_model", "load_source"]

FORMATS = ("onnx", "exported-program")
DEFAULT_WINDOW = (256, 256)


def load_source(path: str | os.PathLike[str]) -> tuple[nn.Module, ExportMetadata]:
    """Rebuild the model saved at ``path`` (``rsvit.models.save_model``) and its export metadata.

    The export window is the file's ``input_size`` when it has one.
    """
    from rsvit.models import load_model

    try:
        model, spec, weights = load_model(path)
    except ValueError as err:
        raise ExportError(f"{path}: cannot rebuild the model to export: {err}") from err
    window = tuple(weights.input_size[-2:]) if weights.input_size else DEFAULT_WINDOW
    return model, ExportMetadata(spec=spec, weights=weights, window=window)


def export_model(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    format: str = "onnx",
    window: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> tuple[nn.Module, ExportMetadata | dict[str, ExportMetadata]]:
    """Exports the model file ``source`` to ``out``; returns the eager model and the metadata written.

    Detectors go to one graph of one image; their ONNX graph stops before the per-class rotated NMS,
    which ONNX lacks and the runner applies (:mod:`rsvit.export.detection`). Promptable (SAM) models go
    to two graphs, the files of :func:`rsvit.export.promptable.sam_paths`, and the metadata is a dict by
    graph role.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    model, metadata = load_source(source)
    if window is not None:
        metadata = metadata.with_changes(window=tuple(window))
    if metadata.spec.task == "promptable":
        from rsvit.export.promptable import export_sam

        written = export_sam(
            model, metadata, out, format=format, opset=opset, overwrite=overwrite, window=window
        )
        return model, written
    if metadata.spec.task == "detection":
        from rsvit.export.detection import export_detection_onnx, export_detection_program

        if format == "onnx":
            return model, export_detection_onnx(model, metadata, out, opset=opset, overwrite=overwrite)
        return model, export_detection_program(model, metadata, out, overwrite=overwrite)
    if format == "onnx":
        written = export_onnx(model, metadata, out, opset=opset, overwrite=overwrite)
    else:
        written = export_program(model, metadata, out, overwrite=overwrite)
    return model, written
