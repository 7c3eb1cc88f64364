"""Value maps (regression: heights, depths): one ``float32`` band, NaN where the input was nodata.

A model may return ``(N, h, w)`` or ``(N, 1, h, w)``; probabilities and polygons do not exist for values,
and asking for them is an error before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from rsvit.inference.outputs.base import ModelFacts, OutputRequest
from rsvit.inference.outputs.dense import DenseOutput, probe_channels
from rsvit.inference.outputs.registry import register_output
from rsvit.inference.writer import OutputLayout

__all__ = ["ValueMapOutput"]


@register_output
@dataclass(frozen=True)
class ValueMapOutput(DenseOutput):
    """Blended values, overviews averaged."""

    tasks: ClassVar[dict[str, int]] = {"regression": 1}
    resampling: ClassVar[str] = "average"

    @classmethod
    def settle(cls, facts: ModelFacts, request: OutputRequest) -> ValueMapOutput:
        channels = 1 if facts.spec is not None else probe_channels(facts)
        layout = OutputLayout(kind="values", channels=channels, probabilities=request.probabilities)
        if request.vector is not None:
            raise ValueError("vector output needs a class map; this model predicts values")
        return cls(layout)

    def as_channels_first(self, out: torch.Tensor) -> torch.Tensor:
        return out.unsqueeze(1) if out.dim() == 3 else out
