"""ONNX translations of PyTorch operators that the dynamo exporter has none for.

``aten::sort.stable`` (the descending, stable sort the oriented RPN ranks anchors with) becomes ONNX
``TopK`` over the whole axis: ONNX defines TopK to put the lower index first among equal values, which
is exactly a stable sort, in either direction.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["onnx_translations"]


def _stable_sort(self: Any, stable: bool | None = None, dim: int = -1, descending: bool = False) -> Any:
    from onnxscript import opset18 as op

    length = op.Gather(op.Shape(self), [dim])
    return op.TopK(self, length, axis=dim, largest=1 if descending else 0, sorted=1)


def onnx_translations() -> dict[Any, Any]:
    """The ``custom_translation_table`` of ``torch.onnx.export`` for rsvit's graphs."""
    return {torch.ops.aten.sort.stable: _stable_sort}
