"""What the raster engine and the export check ask of a model, for a graph run from its exported file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from rsvit.export.metadata import ExportMetadata

__all__ = ["ExportedGraphModel"]


class ExportedGraphModel:
    """Base of the runners of exported files: the model's spec, no parameters, CPU only, input checks.

    Subclasses set ``path`` and ``metadata`` and implement ``__call__``.
    """

    path: Path
    metadata: ExportMetadata
    runtime_name = "the CPU"

    @property
    def spec(self):
        return self.metadata.spec

    @property
    def num_classes(self) -> int:
        return self.metadata.spec.num_classes

    def eval(self) -> ExportedGraphModel:
        return self

    def parameters(self) -> Iterator[torch.Tensor]:
        """No PyTorch parameters: code that looks for the model's device finds none and uses the CPU."""
        return iter(())

    def to(self, device: str | torch.device) -> ExportedGraphModel:
        """Stays on the CPU; any other device is an error rather than a silent CPU run."""
        if torch.device(device).type != "cpu":
            raise ValueError(f"{self.path.name} runs on {self.runtime_name}; use device cpu")
        return self

    def _check(self, inputs: tuple[torch.Tensor, ...]) -> None:
        if len(inputs) != len(self.metadata.inputs):
            raise ValueError(
                f"{self.path.name} takes {len(self.metadata.inputs)} input(s), got {len(inputs)}"
            )
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
