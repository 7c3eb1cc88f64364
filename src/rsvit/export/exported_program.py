"""``torch.export`` archives (``.pt2``) with rsvit metadata as an extra file of the archive."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from rsvit.export.errors import ExportError
from rsvit.export.graph_model import ExportedGraphModel
from rsvit.export.metadata import METADATA_KEY, ExportMetadata
from rsvit.export.tracing import (
    capture_failure,
    check_exportable,
    dynamic_shapes,
    example_inputs,
    second_size,
    size_multiple,
    verify_callable,
)
from rsvit.utils.atomic import atomic_path

__all__ = ["ExportedProgramModel", "export_program", "load_program"]

_EXTRA = f"{METADATA_KEY}.json"


def _export(model: nn.Module, metadata: ExportMetadata, spatial: bool) -> torch.export.ExportedProgram:
    inputs = example_inputs(metadata.spec, metadata.window)
    try:
        return torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes(len(inputs), spatial))
    except Exception as err:
        raise capture_failure(metadata.spec, err) from err


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
    import rsvit.ops.rotated_nms  # noqa: F401  (registers rsvit::batched_nms_rotated, used by detectors)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported program not found: {path}")
    extra = {_EXTRA: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as err:
        raise ExportError(
            f"{path} is not a torch.export archive this PyTorch can load ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else ''}); export it again with "
            "`rsvit export MODEL OUT.pt2 --format exported-program`"
        ) from err
    return program, ExportMetadata.from_json(extra[_EXTRA], source=str(path))


class ExportedProgramModel(ExportedGraphModel):
    """A ``.pt2`` archive written by ``rsvit export``, callable like the eager model it came from.

    Dense models return their tensor; detectors (exported as one image -> ``boxes, scores, labels``)
    return one detection dict per image, as :class:`~rsvit.models.detection.OrientedRCNN` does, so the
    raster engine and its output kinds take it unchanged. Runs on the CPU.

    Only load archives you trust: ``torch.export.load`` rebuilds the program's graph from the file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        program, self.metadata = load_program(self.path)
        if self.metadata.role != "model":
            raise ExportError(
                f"{self.path.name} is the {self.metadata.role} graph of a promptable model; run it with "
                "rsvit.export.promptable.load_sam_graph, not as a raster model"
            )
        self.module = program.module()

    runtime_name = "the CPU here"

    def __call__(self, *inputs: torch.Tensor):
        self._check(inputs)
        inputs = tuple(t.detach().to("cpu", torch.float32) for t in inputs)
        if self.metadata.spec.task == "detection":
            found = []
            for i in range(inputs[0].shape[0]):  # the graph holds one image
                boxes, scores, labels = self.module(inputs[0][i : i + 1])
                found.append({"boxes": boxes, "scores": scores, "labels": labels})
            return found
        if not self.metadata.dynamic_batch and inputs[0].shape[0] != 1:
            outs = [self.module(*(t[i : i + 1] for t in inputs)) for i in range(inputs[0].shape[0])]
            return torch.cat(outs)
        return self.module(*inputs)
