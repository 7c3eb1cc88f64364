"""An ONNX Runtime session that callers can use like the PyTorch model it was exported from.

NCHW float tensors in, what the PyTorch model returns out (logits, heights for regression, one
detection dict per image for detectors), so code written for the eager model (the raster engine, the
export check) can take either. A detector's graph stops before its per-class rotated NMS; that step runs
here, with the settings stored in the file (:mod:`rsvit.export.detection`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from rsvit.export.graph_model import ExportedGraphModel
from rsvit.export.metadata import ExportMetadata
from rsvit.export.onnx import read_onnx_metadata

__all__ = ["OnnxRuntimeModel", "load_onnx_model"]


class OnnxRuntimeModel(ExportedGraphModel):
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

    runtime_name = "ONNX Runtime's CPU provider"

    def __call__(self, *inputs: torch.Tensor):
        self._check(inputs)
        if self.metadata.spec.task == "detection":
            return [self._detect(inputs[0][i : i + 1]) for i in range(inputs[0].shape[0])]
        return torch.from_numpy(self._run(inputs)[0])

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
        feeds = {
            name: np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())
            for name, t in zip(self._inputs, inputs, strict=True)
        }
        return self.session.run(None, feeds)

    def _detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """One image through the graph, then the per-class selection the graph leaves out."""
        from rsvit.models.detection.roi_head import RCNNTestConfig, select_detections

        if self.metadata.selection is None:
            raise ValueError(
                f"{self.path.name} is a detector graph without selection settings in its metadata; "
                "export it again with `rsvit export MODEL OUT.onnx`"
            )
        boxes, class_scores = (torch.from_numpy(a) for a in self._run((image,)))
        boxes, scores, labels = select_detections(
            boxes, class_scores, RCNNTestConfig(**self.metadata.selection)
        )
        return {"boxes": boxes, "scores": scores, "labels": labels}


def load_onnx_model(path: str | os.PathLike[str], threads: int | None = None) -> OnnxRuntimeModel:
    """Open an exported ONNX file as a model.

    Raises:
        MissingMetadataError: the file carries no rsvit metadata.
    """
    return OnnxRuntimeModel(path, threads=threads)
