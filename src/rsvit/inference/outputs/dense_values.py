"""Value maps (regression: heights, depths): one ``float32`` band named ``value``, NaN where nodata.

A model may return ``(N, h, w)`` or ``(N, 1, h, w)``; probabilities and polygons do not exist for values,
and asking for them is an error before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from rsvit.inference.outputs.base import ModelFacts, OutputRequest
from rsvit.inference.outputs.dense import DenseOutput, probe_channels
from rsvit.inference.outputs.registry import register_output
from rsvit.inference.writer import PartialFiles, PartialMap

__all__ = ["ValueMapOutput"]


@register_output
@dataclass(frozen=True)
class ValueMapOutput(DenseOutput):
    """Blended values, overviews averaged."""

    tasks: ClassVar[dict[str, int]] = {"regression": 1}
    resampling: ClassVar[str] = "average"

    @classmethod
    def settle(cls, facts: ModelFacts, request: OutputRequest) -> ValueMapOutput:
        if request.probabilities is not None:
            raise ValueError("probabilities exist only for class maps; this model predicts values")
        if request.vector is not None:
            raise ValueError("vector output needs a class map; this model predicts values")
        return cls(channels=1 if facts.spec is not None else probe_channels(facts))

    def partial_maps(self, files: PartialFiles) -> list[PartialMap]:
        return [
            PartialMap(files.main, count=1, dtype="float32", nodata=float("nan"), descriptions=("value",))
        ]

    def encode(self, blended: np.ndarray, invalid: np.ndarray | None) -> Sequence[np.ndarray]:
        values = blended[0].copy()
        if invalid is not None:
            values[invalid] = np.nan
        return [values]

    def as_channels_first(self, out: torch.Tensor) -> torch.Tensor:
        return out.unsqueeze(1) if out.dim() == 3 else out
