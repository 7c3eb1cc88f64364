"""An ONNX Runtime session that callers can use like the PyTorch model it was exported from.

NCHW float tensors in, the tensor the PyTorch model returns out (logits, or heights for regression),
so code written for the eager model (the raster engine, the export check) can take either.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from rsvit.export.metadata import ExportMetadata
from rsvit.export.onnx import read_onnx_metadata

__all__ = ["OnnxRuntimeModel", "load_onnx_model"]


class OnnxRuntimeModel:
    """A CPU ONNX Runtime session over an rsvit-exported file.

    Args:
        path: ONNX file written by ``rsvit export`` (its metadata is required).
        threads: intra-op threads (``None``: ONNX Runtime's default, all cores).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist")
        self.metadata: ExportMetadata = read_onnx_metadata(self.path)
        options = ort.SessionOptions()
        # idle worker threads would otherwise spin after each run and take the cores from the reader,
        # the writer and any PyTorch code in the same process
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self.session.get_inputs()]

    @property
    def spec(self):
        return self.metadata.spec

    @property
    def num_classes(self) -> int:
        return self.metadata.spec.num_classes

    def eval(self) -> OnnxRuntimeModel:
        return self

    def parameters(self) -> Iterator[torch.Tensor]:
        """No PyTorch parameters: code that looks for the model's device finds none and uses the CPU."""
        return iter(())

    def to(self, device: str | torch.device) -> OnnxRuntimeModel:
        """Stays on the CPU provider; any other device is an error rather than a silent CPU run."""
        if torch.device(device).type != "cpu":
            raise ValueError(f"{self.path.name} runs on ONNX Runtime's CPU provider; use device cpu")
        return self

    def _check(self, inputs: tuple[torch.Tensor, ...]) -> None:
        if len(inputs) != len(self._inputs):
            raise ValueError(f"{self.path.name} takes {len(self._inputs)} input(s), got {len(inputs)}")
        for tensor in inputs:
            if tensor.dim() != 4 or tensor.shape[1] != self.metadata.spec.in_chans:
                raise ValueError(
                    f"{self.path.name} expects (B, {self.metadata.spec.in_chans}, H, W) tensors, got "
                    f"{tuple(tensor.shape)}"
                )
            if not self.metadata.dynamic_spatial and tuple(tensor.shape[-2:]) != self.metadata.window:
                height, width = self.metadata.window
                raise ValueError(
                    f"{self.path.name} only takes {height}x{width} windows "
                    f"({self.metadata.static_reason}); got {tensor.shape[-2]}x{tensor.shape[-1]}. Read "
                    "windows of that size or re-export with --window"
                )
            multiple = self.metadata.size_multiple
            if multiple and any(int(s) % multiple for s in tensor.shape[-2:]):
                raise ValueError(
                    f"{self.path.name} only holds at heights and widths that are multiples of {multiple}; "
                    f"got {tensor.shape[-2]}x{tensor.shape[-1]}"
                )

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        self._check(inputs)
        feeds = {
            name: np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())
            for name, t in zip(self._inputs, inputs, strict=True)
        }
        return torch.from_numpy(self.session.run(None, feeds)[0])


def load_onnx_model(path: str | os.PathLike[str], threads: int | None = None) -> OnnxRuntimeModel:
    """Open an exported ONNX file as a model.

    Raises:
        MissingMetadataError: the file carries no rsvit metadata.
    """
    return OnnxRuntimeModel(path, threads=threads)
