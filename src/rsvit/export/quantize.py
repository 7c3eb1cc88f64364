"""Int8 dynamic quantisation of an exported ONNX model, for CPU inference.

Weights of the quantised operators become int8; activations are quantised on the fly, so no
calibration data is needed. The accuracy change is measured by :func:`rsvit.export.check.argmax_agreement`
(SAM: :func:`rsvit.export.promptable.compare_sam_pairs`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import onnx

from rsvit.export.onnx import read_onnx_metadata, write_onnx_metadata
from rsvit.utils.atomic import atomic_path

__all__ = ["quantize_int8", "quantize_sam_int8"]


def _drop_preprocessing_hint(record: logging.LogRecord) -> bool:
    return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    op_types: tuple[str, ...] | None = ("MatMul", "Gemm"),
) -> Path:
    """Writes an int8 dynamically quantised copy of the rsvit ONNX file ``source`` to ``out``.

    ``op_types``: operators to quantise; the default takes the matrix products (transformer attention and
    MLP layers, linear classifiers) and leaves convolutions in float. ``None``: every supported operator.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    metadata = read_onnx_metadata(source)
    # quantize_dynamic logs a hint about ONNX Runtime's optional pre-processing tool on every call; rsvit
    # does not run that tool (the int8 report measures the result instead), so the hint is left out
    root = logging.getLogger()
    root.addFilter(_drop_preprocessing_hint)
    try:
        with atomic_path(out, suffix=".onnx") as tmp:
            quantize_dynamic(
                str(source),
                str(tmp),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(op_types) if op_types else None,
            )
            proto = onnx.load(str(tmp))
            write_onnx_metadata(proto, metadata.with_changes(quantization="int8-dynamic"))
            onnx.save(proto, str(tmp))
    finally:
        root.removeFilter(_drop_preprocessing_hint)
    return out


def quantize_sam_int8(
    source: str | os.PathLike[str], out: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, Path]:
    """Writes int8 copies of both graphs of the SAM export ``source`` (``OUT.onnx`` names the pair).

    ``Q.onnx`` receives ``Q.encoder.onnx`` and ``Q.decoder.onnx``
    (:func:`~rsvit.export.promptable.sam_paths`), each quantised by :func:`quantize_int8` with its
    metadata kept (``quantization="int8-dynamic"``).
    Nothing is written when either target exists and ``overwrite`` is false.
    """
    from rsvit.export.promptable import sam_paths

    sources, targets = sam_paths(source, "onnx"), sam_paths(out, "onnx")
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --overwrite (overwrite=True) to replace")
    return {role: quantize_int8(sources[role], targets[role], overwrite=overwrite) for role in targets}
