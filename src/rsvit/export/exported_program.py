"""``torch.export`` archives (``.pt2``) with rsvit metadata as an extra file of the archive."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from rsvit.export.errors import ExportError
from rsvit.export.metadata import METADATA_KEY, ExportMetadata
from rsvit.export.tracing import (
    check_exportable,
    dynamic_shapes,
    example_inputs,
    model_name,
    named_operator,
    second_size,
    size_multiple,
    verify_callable,
)
from rsvit.utils.atomic import atomic_path

__all__ = ["export_program", "load_program"]

_EXTRA = f"{METADATA_KEY}.json"


def _export(model: nn.Module, metadata: ExportMetadata, spatial: bool) -> torch.export.ExportedProgram:
    inputs = example_inputs(metadata.spec, metadata.window)
    try:
        return torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes(len(inputs), spatial))
    except Exception as err:
        operator = named_operator(err) or "an unnamed operator"
        raise ExportError(
            f"model {model_name(metadata.spec)} cannot be captured by torch.export (operator {operator}): "
            f"{str(err).splitlines()[0][:300]}"
        ) from err


def export_program(
    model: nn.Module, metadata: ExportMetadata, out: str | os.PathLike[str], *, overwrite: bool = False
) -> ExportMetadata:
    """Captures ``model`` with ``torch.export`` and saves the program with ``metadata``, atomically.

    The ExportedProgram keeps the eager operators (no ONNX translation), so models whose ONNX graph
    needs a fixed size usually stay dynamic here; that is verified at a second size all the same.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    check_exportable(metadata.spec)
    model = model.eval()
    try:
        program = _export(model, metadata, spatial=True)
    except ExportError as err:
        # e.g. a head that crops to a multiple of its stride: torch.export proves the size constraint
        # cannot hold for every height and width, so the spatial size is fixed instead
        program, reason = None, f"torch.export cannot keep height and width dynamic ({err.__cause__})"
    else:
        probe = example_inputs(metadata.spec, second_size(metadata.window), batch=1)
        reason = verify_callable(program.module(), model, probe)
        if reason is not None:
            reason = f"the captured program does not hold at another size ({reason})"
    multiple = None
    if reason is not None:
        program = _export(model, metadata, spatial=False)
    else:
        multiple = size_multiple(program.module(), model, metadata.spec, metadata.window)
    written = metadata.with_changes(
        exporter="torch.export",
        dynamic_batch=True,
        dynamic_spatial=reason is None,
        static_reason=reason,
        size_multiple=multiple,
    )
    with atomic_path(out, suffix=".pt2") as tmp:
        torch.export.save(program, tmp, extra_files={_EXTRA: written.to_json()})
    return written


def load_program(path: str | os.PathLike[str]) -> tuple[torch.export.ExportedProgram, ExportMetadata]:
    """Loads an archive written by :func:`export_program` with its metadata.

    Only load archives you trust: ``torch.export.load`` rebuilds the program's graph from the file.
    """
    extra = {_EXTRA: ""}
    program = torch.export.load(path, extra_files=extra)
    return program, ExportMetadata.from_json(extra[_EXTRA], source=str(path))
