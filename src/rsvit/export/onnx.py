"""ONNX export through the torch.export-based exporter, with rsvit metadata in the model file.

The dynamo exporter (``torch.onnx.export(..., dynamo=True)``) is used first; the TorchScript exporter
is tried only when it fails, and the metadata records which one wrote the graph. Graphs have a dynamic
batch and, where :func:`~rsvit.export.tracing.static_spatial_reason` allows it, dynamic height and
width, which are verified at a second size against the eager model (a graph that fails there is
re-exported with a fixed size, and the reason is recorded).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from rsvit.export.errors import ExportError
from rsvit.export.metadata import METADATA_KEY, ExportMetadata
from rsvit.export.onnx_translations import onnx_translations
from rsvit.export.tracing import (
    check_exportable,
    dynamic_shapes,
    example_inputs,
    model_name,
    named_operator,
    second_size,
    size_multiple,
    static_spatial_reason,
    verify_callable,
)
from rsvit.utils.atomic import atomic_path

__all__ = [
    "DEFAULT_OPSET",
    "export_onnx",
    "read_onnx_metadata",
    "save_program_as_onnx",
    "write_onnx_metadata",
]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18


def read_onnx_metadata(path: str | os.PathLike[str]) -> ExportMetadata:
    """The rsvit metadata of an ONNX file (without loading its weights)."""
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return ExportMetadata.from_json(props.get(METADATA_KEY), source=str(path))


def write_onnx_metadata(model: onnx.ModelProto, metadata: ExportMetadata) -> None:
    """Store rsvit's metadata in the model's ``metadata_props``, replacing an earlier entry."""
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()


def save_program_as_onnx(
    program: torch.export.ExportedProgram, metadata: ExportMetadata, target: Path, opset: int
) -> None:
    """Converts a captured program to the ONNX file ``target`` with ``metadata`` stored in it.

    Raises :class:`ExportError` naming the model, its graph role and the operator the converter lacks.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(
                program,
                input_names=list(metadata.inputs),
                output_names=list(metadata.outputs),
                opset_version=opset,
                dynamo=True,
                verbose=False,
                custom_translation_table=onnx_translations(),
            )
        onnx_program.save(str(target))
    except Exception as err:
        operator = named_operator(err) or "an unnamed operator"
        role = "" if metadata.role == "model" else f" ({metadata.role})"
        raise ExportError(
            f"model {model_name(metadata.spec)}{role} cannot be exported to ONNX: unsupported operator "
            f"{operator} ({str(err).splitlines()[0][:300]}). Export it with --format exported-program"
        ) from err
    proto = onnx.load(str(target))
    write_onnx_metadata(proto, metadata)
    onnx.save(proto, str(target))


def _trace(model: nn.Module, metadata: ExportMetadata, spatial: bool, opset: int, target: Path) -> str:
    """Writes the bare graph to ``target``; returns the exporter that managed it."""
    inputs = example_inputs(metadata.spec, metadata.window)
    names = list(metadata.inputs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                inputs,
                input_names=names,
                output_names=list(metadata.outputs),
                dynamic_shapes=dynamic_shapes(len(inputs), spatial),
                opset_version=opset,
                dynamo=True,
                verbose=False,
                custom_translation_table=onnx_translations(),
            )
        program.save(str(target))
        return "dynamo"
    except Exception as dynamo_error:
        log.warning(
            "dynamo ONNX export of %s failed (%s); trying the TorchScript exporter",
            model_name(metadata.spec),
            str(dynamo_error).splitlines()[0][:200],
        )
        axes = {0: "batch", 2: "height", 3: "width"} if spatial else {0: "batch"}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    inputs,
                    str(target),
                    input_names=names,
                    output_names=list(metadata.outputs),
                    dynamic_axes={name: axes for name in [*names, *metadata.outputs]},
                    opset_version=opset,
                    dynamo=False,
                )
            return "torchscript"
        except Exception as script_error:
            operator = named_operator(dynamo_error) or named_operator(script_error) or "an unnamed operator"
            raise ExportError(
                f"model {model_name(metadata.spec)} cannot be exported to ONNX: operator {operator} is not "
                f"supported by the ONNX exporters (dynamo: {str(dynamo_error).splitlines()[0][:300]}; "
                f"TorchScript: {str(script_error).splitlines()[0][:300]}). Export it with "
                "--format exported-program instead, or replace that layer"
            ) from dynamo_error


def _session_runner(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failure here is expected for some graphs and is handled
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(names, inputs, strict=True)}
        return torch.from_numpy(session.run(None, feeds)[0])

    return run


def export_onnx(
    model: nn.Module,
    metadata: ExportMetadata,
    out: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> ExportMetadata:
    """Exports ``model`` (eval mode) to the ONNX file ``out`` with ``metadata`` stored in it.

    Returns the metadata as written (exporter used, whether height and width are dynamic and why not).
    Raises :class:`ExportError` naming the operator and model when neither exporter can translate it,
    and ``FileExistsError`` when ``out`` exists and ``overwrite`` is false.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    check_exportable(metadata.spec)
    model = model.eval()
    reason = static_spatial_reason(model)
    with atomic_path(out, suffix=".onnx") as tmp:
        exporter = _trace(model, metadata, reason is None, opset, tmp)
        if reason is None:
            probe = example_inputs(metadata.spec, second_size(metadata.window), batch=1)
            failure = verify_callable(_session_runner(tmp), model, probe)
            if failure is not None:
                reason = f"the traced graph does not hold at another size ({failure})"
                log.warning("%s: exporting with a fixed spatial size: %s", model_name(metadata.spec), reason)
                exporter = _trace(model, metadata, False, opset, tmp)
        multiple = None
        if reason is None:
            multiple = size_multiple(_session_runner(tmp), model, metadata.spec, metadata.window)
        written = metadata.with_changes(
            exporter=exporter,
            dynamic_batch=True,
            dynamic_spatial=reason is None,
            static_reason=reason,
            size_multiple=multiple,
        )
        proto = onnx.load(str(tmp))
        write_onnx_metadata(proto, written)
        onnx.save(proto, str(tmp))
    return written
